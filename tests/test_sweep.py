import json

import pandas as pd
import pytest
import torch

from asym_tui.cli import main
from conftest import TINY_RUN
from engine.sweep import ranked

GRID = ["--grid", "num_envs=4,8", "--grid", "lr_micro=3e-4,1e-3"]


def sweep_flags(tmp_path, name):
    sets = [f"--set={k}={v}" for k, v in TINY_RUN.items() if k not in ("data", "max_episodes")]
    return ["sweep", "--data", TINY_RUN["data"], "--episodes", "16", "--out", str(tmp_path), "--name", name, *sets]


def read_sweep(folder):
    return pd.read_csv(folder / "sweep.csv"), json.loads((folder / "sweep.json").read_text())


def test_local_sweep_runs_a_2x2_grid_of_run_folders(tmp_path, capsys):
    assert main([*sweep_flags(tmp_path, "local"), *GRID]) == 0
    table, spec = read_sweep(tmp_path / "local")
    assert len(table) == 4 and set(table["status"]) == {"completed"}
    assert set(zip(table["num_envs"], table["lr_micro"])) == {(4, 3e-4), (4, 1e-3), (8, 3e-4), (8, 1e-3)}
    assert (table["episodes_per_min"] > 0).all()
    for trial in table["trial"]:
        assert (tmp_path / "local" / trial / "summary.json").is_file() and (tmp_path / "local" / trial / "checkpoint.pt").is_file()
    assert list(table["val_score"]) == sorted(table["val_score"], reverse=True)
    out = capsys.readouterr().out
    assert "ranked by validation score" in out and "deflated Sharpe of the top trial" in out
    assert spec["best_trial_dsr"]["trial"] == table["trial"].iloc[0] and 0 <= spec["best_trial_dsr"]["dsr"] <= 1
    assert spec["best_trial_dsr"]["candidates"] == 4


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_ray_sweep_matches_the_local_sweep_for_the_same_seeds(tmp_path, restore_threads):
    pytest.importorskip("ray")
    one_thread = ["--set", "threads=1"]  # Ray gives each trial one CPU; the local runs must compute the same way
    assert main([*sweep_flags(tmp_path, "local"), *GRID, *one_thread]) == 0
    assert main([*sweep_flags(tmp_path, "ray"), *GRID, *one_thread, "--ray", "--cpus-per-trial", "1"]) == 0
    local_table, _ = read_sweep(tmp_path / "local")
    ray_table, spec = read_sweep(tmp_path / "ray")
    assert spec["executor"] == "ray (local)" and set(ray_table["status"]) == {"completed"}
    assert list(ray_table.columns) == list(local_table.columns)
    key = ["num_envs", "lr_micro", "seed"]
    both = local_table.merge(ray_table, on=key, suffixes=("_local", "_ray"))
    assert len(both) == 4  # the same trials
    for column in ("val_sharpe", "test_sharpe", "test_return"):  # same seeds, same episode budget: the same runs
        assert both[f"{column}_ray"].to_numpy() == pytest.approx(both[f"{column}_local"].to_numpy(), rel=1e-3, abs=1e-3), column


def test_ranking_uses_validation_never_test():
    rows = [{"trial": "a", "val_sharpe": 1.0, "test_sharpe": 9.0}, {"trial": "b", "val_sharpe": 2.0, "test_sharpe": -5.0},
            {"trial": "c", "val_sharpe": None, "test_sharpe": 50.0}]
    assert [row["trial"] for row in ranked(rows)] == ["b", "a", "c"]


def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path):
    assert main([*sweep_flags(tmp_path, "failing"), "--grid", "device=cpu,cuda"]) == 0
    table, _ = read_sweep(tmp_path / "failing")
    statuses = sorted(table["status"])
    assert statuses == ["completed", "failed"]
    failed = table[table["status"] == "failed"].iloc[0]
    assert "CUDA is not available" in failed["error"]


def test_resume_skips_finished_trials(tmp_path):
    assert main([*sweep_flags(tmp_path, "resumable"), "--grid", "num_envs=4,8"]) == 0
    folder = tmp_path / "resumable"
    kept = folder / "trial-000" / "summary.json"
    kept_time = kept.stat().st_mtime_ns
    for path in sorted((folder / "trial-001").iterdir()):
        path.unlink()
    (folder / "trial-001").rmdir()
    assert main(["sweep", "--resume", str(folder), "--out", str(tmp_path)]) == 0
    assert kept.stat().st_mtime_ns == kept_time
    assert (folder / "trial-001" / "summary.json").is_file()
    table, _ = read_sweep(folder)
    assert len(table) == 2 and set(table["status"]) == {"completed"}
