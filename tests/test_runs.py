import json
import threading

import pandas as pd
import pytest
import torch

from engine.selection import NO_EDGE
from engine.runs import RUN_FILES, RunError, execute_run, list_runs, load_checkpoint, resume_config
from engine.events import Progress


def assert_valid_run_folder(run_dir, status):
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == status
    for split in ("validation", "test"):
        assert set(summary[split]) == {"agent", "buy_and_hold", "flat", "random", "best_constant", "trailing_rule"}
    state = load_checkpoint(run_dir)
    assert {"model", "learner", "counters", "rng"} <= set(state["trainer"])
    equity = pd.read_csv(run_dir / "equity_test.csv")
    assert {"timestamp", "close", "agent_equity", "buy_and_hold_equity", "agent_level"} <= set(equity.columns)
    assert (equity["agent_equity"] > 0).all()
    assert len(pd.read_csv(run_dir / "metrics.csv")) >= 1
    assert not list(run_dir.glob(".*.tmp"))  # atomic writes leave no temporaries
    return summary, state


def test_a_run_writes_every_file(tiny_config, tiny_splits):
    outcome = execute_run(tiny_config(), splits=tiny_splits)
    summary, state = assert_valid_run_folder(outcome.run_dir, "completed")
    record = json.loads((outcome.run_dir / "config.json").read_text())
    assert record["model"]["layers"] == {"macro": 37, "micro": 10, "head": 4, "value": 2}
    assert record["config"]["num_envs"] == 8 and record["seed"] == 0 and record["device"]["type"] == "cpu"
    assert summary["throughput"]["episodes"] >= 48 and summary["throughput"]["episodes_per_min"] > 0
    assert summary["final_portfolio"] > 0


def test_stopped_run_leaves_a_valid_checkpoint_and_summary(tiny_config, tiny_splits):
    stop = threading.Event()
    outcome = execute_run(tiny_config(max_episodes=0, duration_s=60), splits=tiny_splits, stop=stop,
                          on_event=lambda e: stop.set() if isinstance(e, Progress) and e.episodes >= 16 else None)
    assert_valid_run_folder(outcome.run_dir, "stopped")
    assert outcome.summary.to_json()["throughput"]["episodes"] < 100


@pytest.mark.parametrize("trainer", ["original", "optimized"])
def test_resume_continues_counters_and_optimizer_state(tiny_config, tiny_splits, trainer):
    first = execute_run(tiny_config(trainer=trainer, max_episodes=16), splits=tiny_splits)
    before = load_checkpoint(first.run_dir)["trainer"]
    adam_steps = before["learner"]["micro_optimizer"]["state"][0]["step"]
    config = resume_config(first.run_dir, {"max_episodes": 32})
    second = execute_run(config, resume_dir=first.run_dir, splits=tiny_splits)
    after = load_checkpoint(second.run_dir)["trainer"]
    assert second.run_dir == first.run_dir
    assert after["counters"]["episodes"] == 32
    assert after["learner"]["micro_updates"] > before["learner"]["micro_updates"]
    assert after["learner"]["micro_optimizer"]["state"][0]["step"] > adam_steps
    assert second.summary.to_json()["throughput"]["episodes"] == 32
    assert any("resumed" in event["text"] for event in second.summary.to_json()["events"])


def test_unwritable_output_folder_is_refused_before_training(tiny_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunError, match="not writable"):
        execute_run(tiny_config(out_dir=str(blocker / "runs")))


def test_truncated_or_foreign_checkpoint_is_refused(tmp_path, tiny_config, tiny_splits):
    outcome = execute_run(tiny_config(max_episodes=8), splits=tiny_splits)
    data = (outcome.run_dir / "checkpoint.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="corrupted or truncated"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"format": 99, "version": "9.9.9"}, tmp_path / "future.pt")
    with pytest.raises(RunError, match="version 9.9.9"):
        load_checkpoint(tmp_path / "future.pt")


def test_list_runs_finds_run_folders(tiny_config, tiny_splits):
    outcome = execute_run(tiny_config(max_episodes=8, run_name="alpha"), splits=tiny_splits)
    runs = list_runs(outcome.run_dir.parent)
    assert [run["path"].name for run in runs] == ["alpha"]
    assert runs[0]["summary"].status == "completed"


def test_test_split_uses_the_weights_selection_kept(tiny_config, tiny_splits):
    outcome = execute_run(tiny_config(max_episodes=64), splits=tiny_splits)
    selection = outcome.summary.to_json()["selected_model"]
    state = load_checkpoint(outcome.run_dir)["trainer"]
    assert selection["val_sharpe"] == state["best"]["val_sharpe"]
    assert outcome.summary.to_json()["validation"]["agent"]["sharpe"] == pytest.approx(selection["val_sharpe"])
    # 64 tiny episodes learn nothing that clears the noise: the kept policy is flat, and says so
    assert selection["no_edge"] and selection["weights"] == NO_EDGE and NO_EDGE in selection["verdict"]
    assert selection["best_val_score"] <= selection["edge_bar"]
    assert outcome.summary.to_json()["test"]["agent"]["trades"] == 0
    last = execute_run(tiny_config(max_episodes=64, select_best=False), splits=tiny_splits)
    assert last.summary.to_json()["selected_model"]["weights"] == "last"


def test_duplicates_and_gaps_reach_the_run_log(tiny_config, tmp_path):
    from engine.synthetic import generate_candles
    candles = generate_candles(days=8, seed=3)
    messy = pd.concat([candles.iloc[:1000], candles.iloc[995:1000], candles.iloc[1010:]])
    messy.to_parquet(tmp_path / "messy.parquet")
    events = []
    outcome = execute_run(tiny_config(data=str(tmp_path / "messy.parquet"), max_episodes=8), on_event=events.append)
    texts = [event["text"] for event in outcome.summary.to_json()["events"]]
    assert any("dropped 5 row(s) with duplicated timestamps" in text for text in texts)
    assert any("1 gap(s), 10 missing bar(s), not filled" in text for text in texts)
    assert any("not filled" in getattr(event, "text", "") for event in events)


def test_summary_records_learning_against_time_and_on_unseen_series(tiny_config, tiny_splits):
    outcome = execute_run(tiny_config(max_episodes=96, eval_every_s=1e-9, unseen_series=1), splits=tiny_splits)
    learning, throughput = outcome.summary.to_json()["learning"], outcome.summary.to_json()["throughput"]
    validations = learning["validations"]
    assert len(validations) >= 2 and [v["elapsed_s"] for v in validations] == sorted(v["elapsed_s"] for v in validations)
    assert all(v["optimizer_steps"] <= throughput["optimizer_steps"] for v in validations)
    baselines = learning["validation_baselines"]
    benchmark = max(baselines["flat"], baselines["long"], baselines["short"])
    assert learning["quality_target"] == pytest.approx(max(0.5 * learning["rule_val_score"], benchmark + 1.6448536 * learning["validation_noise"]))
    reached = [v["elapsed_s"] for v in validations if v["val_score"] >= learning["quality_target"]]
    assert learning["time_to_quality_s"] == (reached[0] if reached else None)
    assert learning["validation_series"][:2] == ["validation", "validation mirror"] and len(learning["validation_series"]) == 10
    unseen = learning["unseen"]
    assert len(unseen["series"]) == 1 and unseen["series"][0]["source"].startswith("synthetic:days=40,seed=")
    assert unseen["series"][0]["source"] != tiny_config().data
    assert unseen["long"] + unseen["short"] + unseen["flat"] == pytest.approx(1.0)
    assert throughput["optimizer_steps"] > 0 and throughput["optimizer_steps_per_s"] > 0
    assert outcome.summary.to_json()["algorithm"] == "ppo"


def test_tensorboard_events_hold_the_metrics_series(tiny_config, tiny_splits):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome = execute_run(tiny_config(tensorboard=True), splits=tiny_splits)
    events = EventAccumulator(str(outcome.run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"optimized/steps_per_s", "optimized/optimizer_steps_per_s", "optimized/loss"} <= set(tags)
    metrics = pd.read_csv(outcome.run_dir / "metrics.csv")
    assert len(events.Scalars("optimized/episodes")) == len(metrics)
    assert events.Scalars("optimized/episodes")[-1].value == metrics["episodes"].iloc[-1]


def test_metrics_match_empyrical_on_a_real_equity_curve(tiny_config, tiny_splits):
    """Development check: a quant recomputing the run's test metrics with empyrical gets the same numbers."""
    empyrical = pytest.importorskip("empyrical")
    outcome = execute_run(tiny_config(), splits=tiny_splits)
    equity = pd.read_csv(outcome.run_dir / "equity_test.csv")["buy_and_hold_equity"].to_numpy()  # never flat, unlike a tiny agent
    returns = equity[1:] / equity[:-1] - 1
    periods = outcome.summary.to_json()["metric_conventions"]["periods_per_year"]
    assert periods == 105_120
    ours = outcome.summary.to_json()["test"]["buy_and_hold"]
    assert ours["sharpe"] == pytest.approx(empyrical.sharpe_ratio(returns, annualization=periods), rel=1e-6)
    assert ours["volatility"] == pytest.approx(empyrical.annual_volatility(returns, annualization=periods), rel=1e-6)
    assert ours["max_drawdown"] == pytest.approx(empyrical.max_drawdown(returns), rel=1e-6)
    assert ours["sortino"] == pytest.approx(empyrical.sortino_ratio(returns, annualization=periods), rel=1e-6)
