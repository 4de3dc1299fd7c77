"""Positions and trades: per-bar tables and the trades list of a backtest, by hand and through `eval --out`."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from asym_tui.cli import main
from engine.env import EnvConfig
from engine.evaluation import baseline_backtests, table_backtest, target_table
from engine.features import Features, concatenate
from engine.metrics import trade_returns
from engine.trades import positions_frame, trades_frame
from test_policy import trained_trading_run

FEE = 0.001  # commission, no slippage: hand-computable
RULES = EnvConfig(commission=FEE, slippage=0.0)


def hand_series(closes, start="2024-03-01", name=None) -> Features:
    closes = np.asarray(closes, dtype=np.float64)
    stamps = pd.date_range(start, periods=len(closes), freq="5min").to_numpy()
    blank = np.zeros((len(closes), 1), dtype=np.float32)
    return Features(blank, blank, closes, stamps, segment_names=(name,) if name else None)


def test_a_long_then_a_short_trade_by_hand():
    series = hand_series([100, 110, 121, 121, 110, 99, 99])
    targets = np.array([1, 1, 0, -1, -1, 0, 0])  # each bar's target: the level moves one step toward it
    backtest = table_backtest(series, RULES, 300.0, target_table(targets))
    assert list(backtest.levels) == [1, 1, 0, -1, -1, 0]
    trades = trades_frame(backtest, series, RULES, initial_equity=1000.0)
    assert list(trades["side"]) == ["long", "short"] and list(trades["bars"]) == [2, 2] and list(trades["status"]) == ["closed"] * 2
    assert list(trades["entry_price"]) == [100, 121] and list(trades["exit_price"]) == [121, 99]
    assert list(trades["entry_time"].dt.strftime("%H:%M")) == ["00:00", "00:15"] and list(trades["exit_time"].dt.strftime("%H:%M")) == ["00:10", "00:25"]
    long_return = 1.21 * (1 - FEE) ** 2 - 1  # in at 100, out at 121, a fee each way
    equity_after_long = 1000 * (1 + long_return)
    short_growth = (1 + 11 / 121) * (1 + 11 / 110)  # 1 - each bar's return (121 → 110 → 99), compounded
    assert trades["return"].tolist() == pytest.approx([long_return, short_growth * (1 - FEE) ** 2 - 1])
    assert trades["pnl"].tolist() == pytest.approx([1000 * long_return, equity_after_long * (short_growth * (1 - FEE) ** 2 - 1)])
    assert trades["fees"].tolist() == pytest.approx([FEE * 1000 + FEE * 1000 * 1.21 * (1 - FEE),
                                                     FEE * equity_after_long + FEE * equity_after_long * (1 - FEE) * short_growth])
    positions = positions_frame(backtest, series, RULES, initial_equity=1000.0)
    assert positions["level"].tolist() == [1, 1, 0, -1, -1, 0, 0]
    assert positions.index.tz is not None and positions.index.name == "timestamp"
    assert positions["entries"].tolist() == [True] + [False] * 6 and positions["exits"].tolist() == [False, False, True] + [False] * 4
    assert positions["short_entries"].tolist() == [False] * 3 + [True] + [False] * 3
    assert positions["short_exits"].tolist() == [False] * 5 + [True, False]
    assert positions["equity"].iloc[3] == pytest.approx(equity_after_long)
    assert (1 + positions["returns"]).prod() * 1000 == pytest.approx(positions["equity"].iloc[-1])


def test_an_open_trade_is_marked_to_market_without_an_exit_fee():
    series = hand_series([100, 105, 110])
    backtest = table_backtest(series, RULES, 300.0, target_table(np.ones(3)))
    trades = trades_frame(backtest, series, RULES)
    assert trades["status"].tolist() == ["open"] and trades["exit_price"].tolist() == [110]
    assert trades["return"].tolist() == pytest.approx([1.1 * (1 - FEE) - 1]) and trades["fees"].tolist() == pytest.approx([FEE])
    positions = positions_frame(backtest, series, RULES)
    assert positions["level"].tolist() == [1, 1, 1] and not positions["exits"].any()  # still held at the last bar


def test_every_trade_of_a_busy_backtest_agrees_with_the_metrics(tiny_splits):
    series = tiny_splits.test
    rules = replace(EnvConfig(), position_size=0.5)
    backtest = baseline_backtests(series, rules, 300.0, seed=3)["random"]
    trades = trades_frame(backtest, series, rules, initial_equity=10_000.0)
    positions = positions_frame(backtest, series, rules, initial_equity=10_000.0)
    assert len(trades) == backtest.metrics["trades"] > 50
    assert np.array_equal(trades["return"], trade_returns(backtest.equity, backtest.levels, rules.fee_rate, rules.position_size))
    assert (trades["return"] > 0).mean() == pytest.approx(backtest.metrics["win_rate"])
    assert trades["bars"].sum() == np.count_nonzero(backtest.levels)
    assert positions["entries"].sum() + positions["short_entries"].sum() == len(trades)
    assert np.array_equal(positions["position"], positions["level"] * 0.5)
    assert (1 + positions["returns"]).prod() - 1 == pytest.approx(backtest.metrics["total_return"])
    assert positions.loc[trades["entry_time"], "close"].tolist() == trades["entry_price"].tolist()
    assert (trades["exit_time"] > trades["entry_time"]).all() and (trades["entry_time"].iloc[1:].to_numpy() >= trades["exit_time"].iloc[:-1].to_numpy()).all()


def test_several_symbols_are_named_on_every_row():
    series = concatenate([hand_series([100, 101, 102, 103], name="BTCUSDT"), hand_series([10, 9, 8, 7], name="ETHUSDT")])
    backtest = table_backtest(series, RULES, 300.0, target_table(np.ones(8)))
    assert positions_frame(backtest, series, RULES)["series"].tolist() == ["BTCUSDT"] * 4 + ["ETHUSDT"] * 4
    assert trades_frame(backtest, series, RULES)["series"].tolist() == ["BTCUSDT", "ETHUSDT"]


def test_eval_out_writes_positions_and_trades_that_match_the_report(tmp_path_factory, tmp_path, capsys):
    run_dir = trained_trading_run(tmp_path_factory)
    out = tmp_path / "agent"
    assert main(["eval", str(run_dir), "--data", "synthetic:days=4,seed=77", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    report, agent = json.loads(captured.out), json.loads(captured.out)["policies"]["agent"]
    assert sorted(report["files"]) == sorted(str(out / name) for name in ("positions.csv", "positions.parquet", "trades.csv", "trades.parquet"))
    assert "written to" in captured.err
    positions = pd.read_parquet(out / "positions.parquet")
    trades = pd.read_csv(out / "trades.csv", parse_dates=["entry_time", "exit_time"])
    assert isinstance(positions.index, pd.DatetimeIndex) and str(positions.index.tz) == "UTC"  # quantstats: returns by time
    assert len(positions) == agent["bars"] + 1 and len(trades) == agent["trades"] > 0  # a row per close: one more than the returns
    assert (1 + positions["returns"]).prod() - 1 == pytest.approx(agent["total_return"])
    assert positions["equity"].iloc[0] == 10_000
    from_csv = pd.read_csv(out / "positions.csv", index_col="timestamp", parse_dates=["timestamp"])
    pd.testing.assert_frame_equal(from_csv, positions, check_freq=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "trades.parquet"), trades, check_dtype=False)


def test_eval_out_into_a_file_is_one_line(tmp_path_factory, tmp_path, capsys):
    run_dir = trained_trading_run(tmp_path_factory)
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    assert main(["eval", str(run_dir), "--data", "synthetic:days=4,seed=77", "--out", str(blocker / "out")]) == 2
    error = capsys.readouterr().err
    assert f"--out {blocker / 'out'}: cannot create the folder" in error and error.count("\n") == 1
