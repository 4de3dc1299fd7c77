"""Hostile files, bad values and unlucky moments: one clear line and exit 2, nothing run that should not be,
nothing lost."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from asym_tui.cli import main
from engine.data import DataError, load_candles
from engine.runs import RunError, WriteError, execute_run, load_checkpoint, lock_run_dir, new_run_dir, remove_stale_temporaries
from engine.synthetic import generate_candles


def exits_2(capsys, *argv, expect: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err, err
    return err


@pytest.fixture
def finished_run(tiny_config, tiny_splits):
    return execute_run(tiny_config(max_episodes=8), splits=tiny_splits).run_dir


class RunsCode:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_checkpoint_that_would_run_code_is_refused_unexecuted(tmp_path, capsys):
    target = tmp_path / "pwned"
    torch.save({"format": 2, "trainer": RunsCode(target)}, tmp_path / "evil.pt")
    exits_2(capsys, "eval", str(tmp_path / "evil.pt"), expect="refused")
    assert not target.exists()


def test_our_own_checkpoints_load_as_plain_data(finished_run):
    state = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    assert state["format"] == 2 and "numpy" in state["trainer"]["rng"]


def test_a_checkpoint_with_missing_keys_exits_2(tmp_path, capsys):
    torch.save({"format": 2, "config": {}}, tmp_path / "partial.pt")
    exits_2(capsys, "eval", str(tmp_path / "partial.pt"), expect="incomplete checkpoint (missing normalizer")


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_temporaries(tiny_config, tiny_splits, monkeypatch):
    import engine.runs as runs

    real_fsync, calls = os.fsync, {"n": 0}

    def fsync_until_full(fd):
        calls["n"] += 1
        if calls["n"] > 3:  # config.json and the first checkpoint's files get through; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)
    monkeypatch.setattr(runs.os, "fsync", fsync_until_full)
    with pytest.raises(WriteError, match="No space left on device.*stopped at its last good checkpoint"):
        execute_run(tiny_config(max_episodes=0, duration_s=30, eval_every_s=1e-9, run_name="full"), splits=tiny_splits)
    run_dir = tiny_config().out_dir + "/full"
    monkeypatch.setattr(runs.os, "fsync", real_fsync)
    assert load_checkpoint(run_dir)["trainer"]["counters"]["env_steps"] > 0
    assert not [name for name in os.listdir(run_dir) if name.endswith(".tmp")]


def test_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale, ours = tmp_path / f".summary.json.{dead}.1.tmp", tmp_path / f".summary.json.{os.getpid()}.1.tmp"
    stale.write_text("half"), ours.write_text("busy")
    remove_stale_temporaries(tmp_path)
    assert not stale.exists() and ours.exists()


def test_a_run_folder_in_use_is_refused(finished_run, tiny_config, tiny_splits, capsys):
    with lock_run_dir(finished_run):
        with pytest.raises(RunError, match="in use by another asym-tui process"):
            execute_run(tiny_config(max_episodes=8), splits=tiny_splits, resume_dir=finished_run)
    exits_2(capsys, "train", "--resume", str(finished_run), "--preset", "quick", expect="--preset does not apply with --resume")


@pytest.mark.parametrize("setting, key", [("duration_s=nan", "duration_s"), ("commission=nan", "commission"),
                                          ("lr_micro=inf", "lr_micro"), ("reward_scale=1e400", "reward_scale")])
def test_non_finite_values_are_refused_by_name(capsys, setting, key):
    exits_2(capsys, "train", "--set", setting, expect=f"{key} must be a finite number")


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs-path", ".."])
def test_run_names_cannot_leave_the_runs_folder(tmp_path, capsys, name):
    exits_2(capsys, "train", "--out", str(tmp_path), "--name", name, expect="must be a plain folder name")
    assert not (tmp_path.parent / "escaped").exists()


def test_empty_data_and_dangling_links(tmp_path, capsys, tiny_config):
    exits_2(capsys, "train", "--set", "data=", expect="data must name a source")
    (tmp_path / "taken").symlink_to(tmp_path / "nowhere")
    assert new_run_dir(tmp_path, tiny_config(run_name="taken")).name == "taken-2"


def test_sweep_resume_reruns_an_unfinished_trial_in_its_own_folder(tmp_path, capsys):
    from conftest import TINY_RUN

    sets = [f"--set={k}={v}" for k, v in TINY_RUN.items() if k not in ("data", "max_episodes", "duration_s")]
    argv = ["sweep", "--data", TINY_RUN["data"], "--episodes", "8", "--out", str(tmp_path), "--name", "s", *sets, "--grid", "lr_micro=3e-4,1e-3"]
    assert main(argv) == 0
    summary_path = tmp_path / "s" / "trial-001" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "status": "stopped"}))
    for _ in range(2):
        assert main(["sweep", "--resume", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir()) == ["trial-000", "trial-001"]
    assert json.loads(summary_path.read_text())["status"] == "completed"
    (tmp_path / "s" / "sweep.json").write_text("{ truncated")
    exits_2(capsys, "sweep", "--resume", str(tmp_path / "s"), expect="not readable JSON")


def test_corrupt_summaries_and_configs_exit_2(finished_run, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text("[]")
    exits_2(capsys, "compare", str(finished_run), str(other), expect="expected a JSON object")
    (other / "summary.json").write_text('{"status": "comp')
    exits_2(capsys, "compare", str(finished_run), str(other), expect="not readable JSON")
    (finished_run / "config.json").write_text('{"config": {"seed"')
    exits_2(capsys, "train", "--resume", str(finished_run), expect="not readable JSON")


def test_comparing_two_runs_names_each_by_its_trainer(tiny_config, tiny_splits, capsys):
    original = execute_run(tiny_config(trainer="original", max_episodes=2), splits=tiny_splits).run_dir
    optimized = execute_run(tiny_config(max_episodes=8), splits=tiny_splits).run_dir
    assert main(["compare", str(optimized), str(original)]) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if "metric" in line)
    assert header.index("original") < header.index("optimized")
    episodes = next(line for line in table.splitlines() if "episodes/min" in line)
    values = [float(cell.replace(",", "")) for cell in episodes.replace("│", " ").split() if cell.replace(",", "").replace(".", "").isdigit()]
    assert values[0] < values[1]  # the original's column holds the original's (smaller) throughput


def test_eval_warns_when_the_bar_length_differs_from_training(finished_run, tmp_path, capsys):
    candles = generate_candles(days=20, seed=4)
    hourly = candles.iloc[::12].reset_index(drop=True)
    hourly.to_csv(tmp_path / "hourly.csv", index=False)
    assert main(["eval", str(finished_run), "--data", str(tmp_path / "hourly.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "trained on 5-minute bars; this data has 60-minute bars" in report["notes"][0]


@pytest.mark.parametrize("argv, expect", [
    (["data", "inspect", "synthetic", "--macro-window", "0"], "--micro-window <= --macro-window"),
    (["data", "inspect", "synthetic", "--micro-window", "-5"], "--micro-window <= --macro-window"),
    (["bench", "--device", "tpu", "--quick"], "device 'tpu' is not accepted"),
    (["bench", "--out", "/missing/dir/x.json"], "does not exist or is not writable"),
    (["data", "inspect", "synthetic:days=100000000"], "days must be > 0 and <= 3650"),
    (["data", "inspect", "synthetic:volatility=-1"], "volatility must be > 0"),
])
def test_bad_flags_exit_2_with_one_line(capsys, argv, expect):
    exits_2(capsys, *argv, expect=expect)


def test_broken_presets_are_named_not_crashed_on(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "config" / "presets"
    folder.mkdir(parents=True)
    (folder / "latin.toml").write_bytes(b'description = "caf\xe9"\n')
    (folder / "broken.toml").write_text("num_envs = [")
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "unreadable" in out
    exits_2(capsys, "train", "--preset", "latin", expect="not UTF-8 text")


def write_candles(path, frame):
    frame.to_csv(path, index=False)
    return str(path)


def test_data_checks(tmp_path, monkeypatch):
    candles = generate_candles(days=3, seed=5)
    outside = candles.copy()
    outside.loc[20, "open"] = outside.loc[20, "high"] * 1.01
    with pytest.raises(DataError, match=r"line 22, column 'open': .* outside the bar's range"):
        load_candles(write_candles(tmp_path / "outside.csv", outside))
    boolean = candles.copy()
    boolean["close"] = True
    boolean.to_parquet(tmp_path / "bool.parquet")
    with pytest.raises(DataError, match="column 'close' holds true/false values"):
        load_candles(tmp_path / "bool.parquet")
    lines = candles.to_csv(index=False).splitlines()
    lines[399] = lines[399].replace(lines[399].split(",")[4], "oops")  # file line 400 before the blank lines
    lines[3:3] = ["", ""]
    (tmp_path / "blank.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 402, column 'close'"):
        load_candles(tmp_path / "blank.csv")
    epoch = candles.assign(timestamp=candles["timestamp"].astype("int64") // 10**6).astype({"timestamp": "float64"})
    epoch.loc[7, "timestamp"] = 12345.0
    with pytest.raises(DataError, match="line 9, column 'timestamp': .*before 1990"):
        load_candles(write_candles(tmp_path / "outlier.csv", epoch))
    epoch.loc[7, "timestamp"] = np.inf
    with pytest.raises(DataError, match="line 9, column 'timestamp': time 'inf' is not a finite number"):
        load_candles(write_candles(tmp_path / "inf.csv", epoch))
    (tmp_path / "locked.csv").write_text("x")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(DataError, match="locked.csv: cannot read the file"):
        load_candles(tmp_path / "locked.csv")


def test_data_users_bring(tmp_path):
    candles = generate_candles(days=3, seed=6)
    candles.set_index("timestamp").to_parquet(tmp_path / "indexed.parquet")
    assert len(load_candles(tmp_path / "indexed.parquet")) == len(candles)
    millis = candles["timestamp"].astype("int64") // 10**6
    mixed = candles.assign(timestamp=np.where(np.arange(len(candles)) < 400, millis, millis * 1000))  # ms, then µs
    loaded = load_candles(write_candles(tmp_path / "mixed.csv", mixed))
    assert loaded.attrs["timeframe"] == pd.Timedelta("5min") and loaded["timestamp"].is_monotonic_increasing


def test_divergence_hint_names_reward_scale_when_it_is_the_cause(tiny_config, tiny_splits):
    from engine.trainers import make_trainer

    runner = make_trainer(tiny_config(reward_scale=1e30, max_episodes=200, max_nan_updates=2), tiny_splits)
    result = runner.run()
    assert result.status == "failed" and "lower reward_scale (now 1e+30" in result.stop_reason


@pytest.fixture
def two_symbols(tmp_path):
    btc = generate_candles(days=8, seed=1)
    eth = generate_candles(days=8, seed=2)
    eth[["open", "high", "low", "close"]] /= 15  # a different price level: stitching would show as a jump
    btc.to_csv(tmp_path / "BTCUSDT-5m-2024-01.csv", index=False)
    eth.to_csv(tmp_path / "ETHUSDT-5m-2024-01.csv", index=False)
    return tmp_path


def test_two_symbols_in_one_folder_stay_two_series(two_symbols, capsys):
    from engine.data import segments
    from engine.features import prepare_splits

    candles = load_candles(two_symbols)
    assert sorted(candles["series"].unique()) == ["BTCUSDT", "ETHUSDT"] and len(candles) == 2 * 8 * 288
    assert len(segments(candles)) == 2
    splits = prepare_splits(candles, 64, 16)
    for name in ("train", "validation", "test"):
        lengths = splits[name].segment_lengths
        assert len(lengths) == 2
        first = splits[name].close[: lengths[0]]
        assert first.max() / first.min() < 2  # one symbol's prices only: no jump from ~2,000 to ~30,000 inside
    assert main(["data", "inspect", str(two_symbols), "--macro-window", "64", "--micro-window", "16"]) == 0
    out = capsys.readouterr().out
    assert "BTCUSDT, ETHUSDT" in out and "Segments" in out


def test_rows_of_one_symbol_that_disagree_are_refused(two_symbols):
    btc = pd.read_csv(two_symbols / "BTCUSDT-5m-2024-01.csv")
    btc["volume"] = btc["volume"] + 1
    btc.to_csv(two_symbols / "BTCUSDT-5m-2024-01-copy.csv", index=False)
    with pytest.raises(DataError, match=r"rows for 2024-01-01 00:00:00\+00:00 disagree .*BTCUSDT-5m-2024-01"):
        load_candles(two_symbols)


def test_a_long_gap_ends_a_segment_that_nothing_crosses(tmp_path, tiny_config):
    from engine.env import EnvConfig, VectorizedTradingEnv
    from engine.evaluation import constant_backtest
    from engine.features import prepare_splits

    early, late = generate_candles(days=8, seed=1), generate_candles(days=8, seed=3)
    late["timestamp"] += pd.Timedelta(days=900)  # years apart, like 2021 and 2024 files of one symbol
    early.to_csv(tmp_path / "BTCUSDT-5m-2021-03.csv", index=False)
    late.to_csv(tmp_path / "BTCUSDT-5m-2024-01.csv", index=False)
    candles = load_candles(tmp_path)
    assert "series" not in candles and candles.attrs["gaps"] == 1
    splits = prepare_splits(candles, 64, 16)
    train = splits.train
    assert len(train.segment_lengths) == 2
    second_start = pd.Timestamp(train.timestamps[train.segment_lengths[0]], tz="UTC")
    assert second_start >= late["timestamp"].iloc[0] + pd.Timedelta(minutes=5 * (48 + 64 - 1))  # warmed up again
    env = VectorizedTradingEnv(train, 512, EnvConfig(episode_steps=50))
    env.reset()
    ends = np.cumsum(train.segment_lengths)
    segment_end = ends[np.searchsorted(ends, env.start.numpy(), side="right")]
    assert (env.start.numpy() + 50 < segment_end).all()  # every episode fits inside its segment
    backtest = constant_backtest(train, EnvConfig(), 300, 1)
    cut = train.segment_lengths[0]
    assert len(backtest.equity) == len(train) and backtest.levels[cut - 1] == 0
    assert backtest.equity[cut] == backtest.equity[cut - 1]  # nothing earned or lost across the cut


def test_resume_keeps_the_trainer_and_eval_refuses_a_model_for_other_features(finished_run, tmp_path, capsys):
    exits_2(capsys, "train", "--resume", str(finished_run), "--trainer", "original", expect="a resumed run keeps its trainer (optimized)")
    state = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    state["model_shape"]["macro_dim"] += 3
    torch.save(state, tmp_path / "other.pt")
    exits_2(capsys, "eval", str(tmp_path / "other.pt"), "--data", "synthetic:days=6,seed=1", expect="the model reads 87 features")


def test_cli_refuses_more_envs_than_the_device_takes_like_the_app(tmp_path, capsys):
    assert main(["train", "--num-envs", "100000", "--device", "cpu", "--out", str(tmp_path), "--quiet"]) == 2
    assert "num_envs 100,000 is more than cpu takes (1–4,096)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
