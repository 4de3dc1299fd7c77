"""Walk-forward and CPCV: fold geometry (purge gaps), real runs per fold, the aggregate, do-no-harm, resume."""

import json
import os

import pandas as pd
import pytest

from asym_tui.cli import main
from engine.synthetic import generate_candles
from engine.sweep import Trial
from engine.walkforward import Fold, Span, cpcv_folds, fold_outcome, walk_forward_folds

TINY = ["--set", "macro_window=64", "--set", "micro_window=16", "--set", "episode_steps=32", "--set", "eval_every_s=0",
        "--set", "duration_s=0", "--set", "unseen_series=0", "--episodes", "16", "--num-envs", "8", "--quiet"]
BAR = pd.Timedelta(minutes=5)


@pytest.fixture(scope="module")
def month_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "BTCUSDT-5m-2024-01.csv"
    generate_candles(days=30, seed=5).to_csv(path, index=False)
    return str(path)


def span_of(start, end, gaps=()):
    stamps = pd.date_range(start, end, freq=BAR, inclusive="left", tz="UTC")
    for first, last in gaps:
        stamps = stamps[(stamps < pd.Timestamp(first, tz="UTC")) | (stamps >= pd.Timestamp(last, tz="UTC"))]
    return Span(pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"), BAR, stamps.tz_convert(None).to_numpy())


def test_walk_forward_folds_leave_the_purge_between_train_and_test():
    span = span_of("2024-01-01", "2024-03-01")
    folds = walk_forward_folds(span, pd.Timedelta(days=20), pd.Timedelta(days=7), pd.Timedelta(days=7), purge_bars=540)
    assert len(folds) == 5
    for index, fold in enumerate(folds):
        (train_start, train_end), ((test_start, test_end),) = fold.train, fold.tests
        assert train_start == span.start + index * pd.Timedelta(days=7)
        assert test_start == train_end + 540 * BAR and test_end <= span.end


def test_folds_pass_over_the_gaps_between_monthly_files():
    span = span_of("2024-01-01", "2024-06-01", gaps=[("2024-02-05", "2024-04-20")])  # January and May only
    folds = walk_forward_folds(span, pd.Timedelta(days=20), pd.Timedelta(days=5), pd.Timedelta(days=5), purge_bars=540)
    assert folds and all(min(span.coverage(*fold.train), span.coverage(*fold.tests[0])) >= 0.9 for fold in folds)
    assert {fold.tests[0][0].month for fold in folds} <= {1, 2, 5}
    assert [fold.name for fold in folds] == [f"fold{i:02d}" for i in range(len(folds))]


def test_cpcv_splits_every_choice_of_test_groups():
    span = span_of("2024-01-01", "2024-01-31")
    folds, windows = cpcv_folds(span, 5, 2)
    assert len(folds) == 10 and len(windows) == 5
    assert all(len(fold.tests) == 2 for fold in folds)
    assert sum(windows[0] in fold.tests for fold in folds) == 4  # each group is tested by C(4, 1) splits: 4 paths


def test_walkforward_end_to_end_with_resume(month_csv, tmp_path, capsys):
    flags = ["walkforward", "--data", month_csv, "--train", "12d", "--test", "4d", "--purge", "112", "--seeds", "2",
             "--out", str(tmp_path), "--name", "wf", *TINY]
    assert main([*flags, "--json"]) == 0
    study = json.loads(capsys.readouterr().out)
    assert study["mode"] == "walk-forward" and len(study["folds"]) == 4
    for fold in study["folds"]:
        train_end, test_start = pd.Timestamp(fold["train"][1]), pd.Timestamp(fold["tests"][0][0])
        assert test_start >= train_end + 112 * BAR  # the checker's rule: test after train plus the purge
    completed = [row for row in study["rows"] if "agent" in row]
    assert len(completed) == 8 and {row["seed"] for row in completed} == {0, 1}
    for row in completed:
        config = json.loads((tmp_path / "wf" / row["trial"] / "config.json").read_text())["config"]
        assert config["test_windows"].startswith(row["test_start"]) and config["purge_bars"] == 112
        if row["trades"]:  # do no harm: a policy trades out of sample only after beating flat on validation
            assert not row["no_edge"] and row["val_score"] > row["edge_bar"]
    first = completed[0]
    assert main(["eval", str(tmp_path / "wf" / first["trial"]), "--json"]) == 0  # eval cuts the run's own test window the same way
    assert json.loads(capsys.readouterr().out)["policies"]["agent"]["sharpe"] == pytest.approx(first["agent"])
    aggregate = study["aggregate"]["optimized"]
    assert aggregate["folds"] == 4 and aggregate["seeds"] == 2
    assert aggregate["interval"][0] <= aggregate["iqm"] <= aggregate["interval"][1]
    assert aggregate["trading_without_validation_edge"] == 0 and 0 <= aggregate["beats_buy_and_hold"] <= 1
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "wf").glob("*/summary.json")}
    assert main(["walkforward", "--resume", str(tmp_path / "wf")]) == 0  # nothing left to train: same results, no new runs
    out = capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "wf").glob("*/summary.json")} == stamps
    assert "Out of sample per fold" in out and "Aggregate over folds and seeds" in out


def test_walkforward_tables_fit_80_columns(month_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["walkforward", "--data", month_csv, "--train", "20d", "--test", "4d", "--purge", "112", "--out", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    assert "Out of sample per fold" in out and "…" not in out
    assert max(len(line) for line in out.splitlines() if str(tmp_path) not in line) <= 80  # a long folder path may not fit


def test_cpcv_recombines_paths_and_reports_pbo_over_seeds(month_csv, tmp_path, capsys):
    assert main(["walkforward", "--data", month_csv, "--cpcv", "4,2", "--purge", "112", "--seeds", "2", "--out", str(tmp_path),
                 "--name", "cpcv", "--json", *TINY]) == 0
    study = json.loads(capsys.readouterr().out)
    assert study["mode"] == "cpcv" and len(study["folds"]) == 6
    assert set(study["paths"]) == {"optimized seed 0", "optimized seed 1"}
    assert all(len(sharpes) == 3 for sharpes in study["paths"].values())  # φ = 2/4 × C(4, 2)
    assert study["pbo"]["names"] == ["optimized seed 0", "optimized seed 1"]


@pytest.mark.parametrize("flags, message", [(["--purge", "10"], "at least the macro window"),
                                            (["--train", "40d"], "no fold fits the data: each needs train 40d + purge 9h20m"),
                                            (["--cpcv", "4"], "use N,K"),
                                            (["--cpcv", "4,2", "--train", "3d"], "--cpcv makes its own groups"),
                                            (["--trainers", "fast"], "--trainers 'fast'"),
                                            (["--test", "soon"], "--test 'soon'")])
def test_bad_walkforward_options_exit_2(month_csv, tmp_path, capsys, flags, message):
    assert main(["walkforward", "--data", month_csv, "--out", str(tmp_path), *TINY, *flags]) == 2
    assert message in capsys.readouterr().err
    assert not any(p.is_dir() and any(p.iterdir()) for p in tmp_path.iterdir()) if tmp_path.exists() else True


def test_resume_refuses_a_folder_that_is_not_a_walkforward(tmp_path, capsys):
    os.makedirs(tmp_path / "empty")
    assert main(["walkforward", "--resume", str(tmp_path / "empty")]) == 2
    assert "not a walk-forward folder" in capsys.readouterr().err


def test_a_fold_that_failed_before_its_summary_keeps_the_reason(tmp_path):
    start = pd.Timestamp("2024-01-01", tz="UTC")
    fold = Fold("fold00", (start, start + pd.Timedelta(days=20)), ((start + pd.Timedelta(days=22), start + pd.Timedelta(days=27)),))
    trial = Trial("fold00-optimized-seed0", {}, 0)
    executed = {"trial": trial.name, "status": "failed", "error": "DataError: too few rows"}
    row = fold_outcome(executed, trial, fold, "optimized", tmp_path)
    assert (row["status"], row["error"], row["fold"]) == ("failed", "DataError: too few rows", "fold00")
