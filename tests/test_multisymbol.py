"""One agent across several symbols: a folder of two symbols trains one agent on both (episodes drawn from
every series), and the test split is reported per symbol as well as pooled."""

import json

import numpy as np

from asym_tui.cli import main
from conftest import TINY_RUN
from engine.config import load_config
from engine.runs import prepare_data
from engine.synthetic import generate_candles
from engine.trainers import OptimizedTrainer


def two_symbols(folder):
    folder.mkdir()
    for symbol, seed in (("BTCUSDT", 3), ("ETHUSDT", 4)):
        generate_candles(days=8, seed=seed, start_price=30_000 if seed == 3 else 2_000).to_csv(folder / f"{symbol}-5m-2024-01.csv", index=False)
    return str(folder)


def test_one_agent_trains_on_every_symbol_and_is_judged_per_symbol(tmp_path, capsys):
    data = two_symbols(tmp_path / "klines")
    config = load_config(None, {**TINY_RUN, "data": data, "out_dir": str(tmp_path / "runs")})
    splits = prepare_data(config)
    assert set(splits.train.segment_names) == set(splits.test.segment_names) == {"BTCUSDT", "ETHUSDT"}
    trainer = OptimizedTrainer(config, splits)
    ends = np.cumsum(splits.train.segment_lengths)
    visited = set()
    for _ in range(3):
        batch, _ = trainer.collect()
        segments = np.searchsorted(ends, batch.rows.reshape(-1).numpy(), side="right")
        visited |= {splits.train.segment_names[s] for s in segments}
    assert visited == {"BTCUSDT", "ETHUSDT"}  # episodes come from both symbols

    sets = [f"--set={k}={v}" for k, v in TINY_RUN.items() if k not in ("data",)]
    assert main(["train", "--data", data, "--out", str(tmp_path / "runs"), "--name", "both", "--quiet", *sets]) == 0
    assert "Test split by symbol" in capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "both" / "summary.json").read_text())
    assert set(summary["test_by_series"]) == {"BTCUSDT", "ETHUSDT"}
    for policies in summary["test_by_series"].values():
        assert {"agent", "buy_and_hold", "trailing_rule", "best_constant"} <= set(policies)
    assert summary["test"]["agent"]["bars"] == sum(p["agent"]["bars"] for p in summary["test_by_series"].values()) + 1  # pooled: plus the cut
