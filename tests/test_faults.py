"""Fault injection on CPU: out of memory, NaN, compile failures, signals, bad output folders, doctor."""

import json
import math
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import TINY_RUN
from engine.runs import RunError, check_output_dir, execute_run, load_checkpoint
from engine.events import LogMessage
from engine.precision import CPU_WITHOUT_BFLOAT16, cpu_bfloat16_native
from engine.trainers import make_trainer


def fail_on_calls(function, calls: set[int], error_factory):
    """Wrap `function` so its k-th calls (1-based) raise the error instead."""
    count = {"n": 0}

    def wrapped(*args, **kwargs):
        count["n"] += 1
        if count["n"] in calls:
            raise error_factory()
        return function(*args, **kwargs)
    return wrapped


def test_out_of_memory_halves_num_envs_records_it_and_continues(tiny_config, tiny_splits):
    events = []
    runner = make_trainer(tiny_config(num_envs=16, max_episodes=64), tiny_splits, on_event=events.append)
    runner.collect = fail_on_calls(runner.collect, {2}, lambda: torch.OutOfMemoryError("CUDA out of memory (injected)"))
    runner.learner.learn = fail_on_calls(runner.learner.learn, {3}, lambda: torch.OutOfMemoryError("CUDA out of memory (injected)"))
    result = runner.run()
    assert result.status == "completed" and runner.episodes >= 64
    assert runner.num_envs == 4
    halvings = [e.text for e in events if isinstance(e, LogMessage) and "out of memory" in e.text]
    assert halvings == ["out of memory: num_envs halved from 16 to 8", "out of memory: num_envs halved from 8 to 4"]
    assert {row["num_envs"] for row in result.history} >= {4}


def test_out_of_memory_is_recorded_in_the_run_folder(tiny_config, tiny_splits, monkeypatch):
    from engine.trainers import OptimizedTrainer
    original_collect = OptimizedTrainer.collect
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("injected")
        return original_collect(self)
    monkeypatch.setattr(OptimizedTrainer, "collect", flaky)
    outcome = execute_run(tiny_config(num_envs=8, max_episodes=32), splits=tiny_splits)
    assert any("num_envs halved from 8 to 4" in e["text"] for e in outcome.summary.to_json()["events"])
    assert outcome.summary.to_json()["training"]["num_envs"] == 4
    assert 4 in set(pd.read_csv(outcome.run_dir / "metrics.csv")["num_envs"])


def test_out_of_memory_at_the_floor_stops_with_a_message_and_a_valid_folder(tiny_config, tiny_splits, monkeypatch):
    from engine.trainers import OptimizedTrainer

    def always_oom(self):
        raise RuntimeError("MPS backend out of memory (injected)")
    monkeypatch.setattr(OptimizedTrainer, "collect", always_oom)
    outcome = execute_run(tiny_config(num_envs=8, min_num_envs=4, max_episodes=32), splits=tiny_splits)
    assert outcome.summary.to_json()["status"] == "failed"
    assert "out of memory even at num_envs=4" in outcome.summary.to_json()["stop_reason"]
    assert load_checkpoint(outcome.run_dir)["trainer"]["counters"]["episodes"] == 0
    assert json.loads((outcome.run_dir / "summary.json").read_text())["test"]["agent"]


def with_nan_rewards(collect, calls):
    count = {"n": 0}

    def wrapped():
        batch, finished = collect()
        count["n"] += 1
        if count["n"] in calls:
            rewards = batch.rewards.clone()
            rewards[0, 0] = math.nan
            batch = batch._replace(rewards=rewards)
        return batch, finished
    return wrapped


def test_a_nan_update_is_skipped_and_counted(tiny_config, tiny_splits):
    runner = make_trainer(tiny_config(max_episodes=48, algorithm="reinforce"), tiny_splits)
    before = [p.detach().clone() for p in runner.model.parameters()]
    runner.collect = with_nan_rewards(runner.collect, {1})
    result = runner.run()
    assert result.status == "completed"
    assert runner.learner.nan_skips == 1 and result.last.nan_skips == 1
    assert runner.learner.micro_updates == 48 // 8 - 1
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, runner.model.parameters()))


def test_repeated_nan_updates_stop_cleanly_with_advice(tiny_config, tiny_splits):
    runner = make_trainer(tiny_config(max_episodes=400, max_nan_updates=3, use_amp=True, algorithm="reinforce"), tiny_splits)
    runner.collect = with_nan_rewards(runner.collect, set(range(1, 1000)))
    result = runner.run()
    assert result.status == "failed"
    assert "3 non-finite updates in a row" in result.stop_reason
    assert "lower lr_micro" in result.stop_reason and "AMP off" in result.stop_reason


def test_compile_failing_on_a_later_recompile_falls_back_once(tiny_config, tiny_splits):
    events = []
    runner = make_trainer(tiny_config(compile_model=True, compile_backend="eager", max_episodes=48, rollout_steps=16), tiny_splits,
                          on_event=events.append)
    policy = runner.learner.rollout_heads  # called twice per step: call 40 is in the second rollout
    policy.compiled = fail_on_calls(policy.compiled, {40}, lambda: RuntimeError("recompilation failed (injected)"))
    result = runner.run()
    warnings = [e.text for e in events if isinstance(e, LogMessage) and e.level == "warning"]
    assert result.status == "completed" and runner.episodes >= 48
    assert len(warnings) == 1 and "recompilation failed" in warnings[0]


def train_subprocess(tmp_path):
    sets = [f"--set={k}={v}" for k, v in TINY_RUN.items() if k not in ("data", "max_episodes", "duration_s")]
    return subprocess.Popen([sys.executable, "-m", "asym_tui.cli", "train", "--data", TINY_RUN["data"], "--duration", "120s",
                             "--out", str(tmp_path / "runs"), "--name", "run", "--quiet", *sets],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_training(process, run_dir, seconds=60):
    deadline = time.monotonic() + seconds
    while not (run_dir / "config.json").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)  # a few updates


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signals_stop_headless_training_with_a_checkpoint_and_summary(tmp_path, sig, code):
    process = train_subprocess(tmp_path)
    run_dir = tmp_path / "runs" / "run"
    wait_for_training(process, run_dir)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["test"]["agent"]
    state = load_checkpoint(run_dir)
    assert state["trainer"]["counters"]["episodes"] > 0


def test_second_ctrl_c_exits_at_once_without_half_written_files(tmp_path):
    process = train_subprocess(tmp_path)
    run_dir = tmp_path / "runs" / "run"
    wait_for_training(process, run_dir)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    for name in ("config.json", "summary.json"):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    if (run_dir / "checkpoint.pt").exists():
        load_checkpoint(run_dir)


def test_full_output_folder_is_refused(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(RunError, match="has only 1 MiB free"):
        check_output_dir(tmp_path / "runs")


def test_read_only_output_folder_exits_2_before_training(tmp_path):
    blocked = tmp_path / "readonly"
    blocked.write_text("a file where the runs folder should be")
    result = subprocess.run([sys.executable, "-m", "asym_tui.cli", "train", "--out", str(blocked / "runs"), "--episodes", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not writable" in result.stderr and "Traceback" not in result.stderr


def test_truncated_checkpoint_resume_exits_2(tmp_path, tiny_config, tiny_splits):
    outcome = execute_run(tiny_config(max_episodes=8), splits=tiny_splits)
    checkpoint = outcome.run_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    result = subprocess.run([sys.executable, "-m", "asym_tui.cli", "train", "--resume", str(outcome.run_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "corrupted or truncated" in result.stderr


def test_doctor_on_this_cpu_machine():
    result = subprocess.run([sys.executable, "-m", "asym_tui.cli", "doctor", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["device"] == "cpu" and facts["recommended_preset"] == "optimized"
    assert facts["torch"] == torch.__version__ and "GiB total" in facts["memory"]
    probes = {p["name"]: p for p in facts["probes"]}
    assert set(probes) == {"bfloat16 autocast", "float16 autocast", "torch.compile"}
    bfloat16 = probes["bfloat16 autocast"]
    assert bfloat16["works"] if cpu_bfloat16_native() else (not bfloat16["works"] and bfloat16["detail"] == CPU_WITHOUT_BFLOAT16)
    assert not probes["float16 autocast"]["works"] and "needs CUDA" in probes["float16 autocast"]["detail"]
    assert probes["torch.compile"]["detail"]  # works here, or says why not
