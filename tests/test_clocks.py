"""Honest clocks: --duration holds within an iteration (a slow first rollout or update is cut short), warm-up
counts in it and shows, rates never come from zero seconds, and --total-steps is an env-step budget."""

import json
import threading
import time

import pytest
import torch

from engine.config import RunConfig
from engine.env import TradingEnv, VectorizedTradingEnv
from engine.events import Progress
from engine.learners import PPOLearner
from engine.trainers import make_trainer

SLACK_S = 3.0  # beyond the duration and one slowed step: the final progress event, and a busy machine


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a crowded machine two spin-waiting threads make every real step slow and uneven."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def slowed(monkeypatch, cls, name, seconds):
    original = getattr(cls, name)

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)
    monkeypatch.setattr(cls, name, slow)


def timed_run(trainer):
    started = time.perf_counter()
    result = trainer.run()
    return result, time.perf_counter() - started


def assert_figures_add_up(last: Progress, trainer) -> None:
    assert last.train_s + last.warmup_s <= last.elapsed_s
    warmup = trainer.warmup
    if last.train_s:  # rates over the training after warm-up
        assert last.steps_per_s == pytest.approx(trainer.session_steps / last.train_s)
        assert last.optimizer_steps_per_s == pytest.approx(trainer.session_updates / last.train_s)
    elif warmup.seconds:  # only warm-up happened: its rates, never counts over zero seconds
        assert last.steps_per_s == pytest.approx(warmup.steps / warmup.seconds)
    else:
        assert last.steps_per_s == last.optimizer_steps_per_s == last.episodes_per_min == 0


@pytest.mark.parametrize("trainer_name, env_class, method", [("optimized", VectorizedTradingEnv, "advance"),
                                                             ("original", TradingEnv, "step")])
def test_duration_cuts_a_slow_first_reinforce_rollout(tiny_config, tiny_splits, monkeypatch, trainer_name, env_class, method):
    # 400-step episodes at 50 ms a step: 20 s for the first rollout alone, against a 1 s duration
    config = tiny_config(trainer=trainer_name, algorithm="reinforce", episode_steps=400, duration_s=1.0, max_episodes=0)
    trainer = make_trainer(config, tiny_splits)
    slowed(monkeypatch, env_class, method, 0.05)
    result, elapsed = timed_run(trainer)
    assert elapsed < config.duration_s + 0.05 + SLACK_S
    assert result.status == "completed" and result.stop_reason == "duration of 1 s reached"
    assert trainer.env_steps == 0 and trainer.learner.micro_updates == 0  # the cut rollout taught nothing
    assert_figures_add_up(result.last, trainer)


def test_duration_cuts_a_slow_ppo_update_between_minibatch_steps(tiny_config, tiny_splits, monkeypatch):
    # 16 minibatch steps of 1.5 s: 24 s for the first update, against a 3 s duration
    config = tiny_config(duration_s=3.0, max_episodes=0, rollout_steps=8)
    trainer = make_trainer(config, tiny_splits)
    slowed(monkeypatch, PPOLearner, "accumulate", 1.5)
    result, elapsed = timed_run(trainer)
    assert elapsed < config.duration_s + 1.5 + SLACK_S
    assert result.stop_reason == "duration of 3 s reached"
    assert 0 < trainer.learner.micro_updates < config.ppo_epochs * config.ppo_minibatches
    last = result.last
    assert last.train_s == 0 and last.warmup_s > 0 and last.env_steps == 8 * 8  # the whole run was warm-up ...
    assert_figures_add_up(last, trainer)  # ... so its rates are warm-up's


def test_warm_up_shows_its_seconds_while_it_lasts(tiny_config, tiny_splits, monkeypatch):
    config = tiny_config(duration_s=3.0, max_episodes=0, rollout_steps=8)
    events = []
    trainer = make_trainer(config, tiny_splits, on_event=events.append)
    slowed(monkeypatch, PPOLearner, "accumulate", 0.5)
    result = trainer.run()
    warming = [e for e in events if isinstance(e, Progress) and e.phase == "warming up"]
    assert len(warming) >= 3 and warming[-1].elapsed_s >= 1.0  # heartbeats while the first iteration runs ...
    assert [row["phase"] for row in result.history].count("warming up") == 1  # ... are sent, not recorded
    assert result.last.elapsed_s >= config.duration_s and result.last.warmup_s > 0


def test_a_stop_signal_ends_a_long_rollout(tiny_config, tiny_splits, monkeypatch):
    stop = threading.Event()
    config = tiny_config(algorithm="reinforce", episode_steps=400, duration_s=0, max_episodes=10)
    trainer = make_trainer(config, tiny_splits, stop=stop)
    slowed(monkeypatch, VectorizedTradingEnv, "advance", 0.05)
    threading.Timer(0.5, stop.set).start()
    result, elapsed = timed_run(trainer)
    assert result.status == "stopped" and elapsed < 0.5 + SLACK_S


def test_a_normal_run_adds_up(tiny_config, tiny_splits):
    trainer = make_trainer(tiny_config(rollout_steps=16), tiny_splits)
    result = trainer.run()
    assert result.last.train_s > 0 and result.last.episodes >= 48
    assert_figures_add_up(result.last, trainer)


def test_total_steps_is_an_env_step_budget_and_anneals_the_learning_rate(tiny_config, tiny_splits):
    config = tiny_config(total_steps=1000, max_episodes=0, rollout_steps=16)  # 8 envs x 16 steps = 128 a rollout
    trainer = make_trainer(config, tiny_splits)
    result = trainer.run()
    assert result.stop_reason == "env-step budget of 1,000 reached"
    assert 1000 <= trainer.env_steps < 1000 + 128 and result.last.done_fraction == 1.0
    trainer.env_steps = 250
    assert trainer.remaining(time.perf_counter()) == pytest.approx(0.75)
    trainer.config.duration_s = 100.0  # whichever budget ends first leads the schedule
    assert trainer.remaining(time.perf_counter() - 50.0) == pytest.approx(0.5, abs=0.01)


def test_train_total_steps_flag_and_json_progress_lines(tmp_path, capsys):
    from asym_tui.cli import main
    from conftest import TINY_RUN

    sets = [item for key in ("macro_window", "micro_window", "episode_steps", "num_envs", "min_num_envs", "unseen_series")
            for item in ("--set", f"{key}={TINY_RUN[key]}")]
    assert main(["train", "--data", TINY_RUN["data"], "--total-steps", "300", "--out", str(tmp_path), "--json",
                 "--set", "duration_s=0", "--set", "rollout_steps=16", "--set", "eval_every_s=0", *sets]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    rollout_bars = 8 * 16 * RunConfig().action_repeat  # one rollout: 8 envs x 16 decisions, each deciding action_repeat bars
    assert result["stop_reason"] == "env-step budget of 300 reached" and 300 <= result["throughput"]["env_steps"] < 300 + rollout_bars
    lines = [json.loads(line) for line in captured.err.splitlines()]  # every stderr line is one JSON object
    progress = [line for line in lines if line["event"] == "progress"]
    assert progress and progress[-1]["total_steps"] == 300
    trained = [line for line in progress if line["phase"] == "training" and line["micro_updates"]]
    assert trained and all(line[key] is not None for line in trained
                           for key in ("approx_kl", "clip_fraction", "entropy", "policy_loss", "value_loss", "learning_rate"))


def test_total_steps_must_not_be_negative(capsys):
    from asym_tui.cli import main

    assert main(["train", "--total-steps", "-5"]) == 2
    assert "total_steps must be >= 0" in capsys.readouterr().err
