"""`asym-tui bench --quick` on CPU with a tiny matrix: well-formed JSON, positive figures, same-run ratios."""

import json
import os
import subprocess
import sys

import pytest

from engine import precision
from engine.bench import BenchCase, default_cases


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_bench_quick_writes_well_formed_json(tmp_path, algorithm):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "asym_tui.cli", "bench", "--quick", "--device", "cpu", "--num-envs", "8,16",
                             "--episode-steps", "40", "--data", "synthetic:days=8,seed=3", "--warmup", "1", "--out", str(out),
                             "--algorithm", algorithm, *(["--json"] if algorithm == "reinforce" else [])],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert " eps/min " in result.stderr and " eps/min " not in result.stdout  # progress lines never land in a redirected file
    if algorithm == "reinforce":
        assert json.loads(result.stdout) == json.loads(out.read_text())  # --json: stdout is the JSON and nothing else
    else:
        assert "× original" in result.stdout
    report = json.loads(out.read_text())
    assert report["machine"]["device"] == "cpu" and report["episode_steps"] == 40
    rows = report["results"]
    assert [row["label"] for row in rows] == ["original", "optimized 8 envs, fp32", "optimized 16 envs, fp32"]
    original = rows[0]
    for row in rows:
        assert row["error"] == ""
        assert row["episodes_per_min"] > 0 and row["steps_per_s"] > 0 and row["iterations"] >= 1 and row["optimizer_steps_per_s"] > 0
        assert row["rollout_s"] > 0 and row["update_s"] > 0 and row["warmup_s"] > 0 and row["peak_host_mb"] > 0
        assert row["ratio"] == pytest.approx(row["episodes_per_min"] / original["episodes_per_min"])
    assert original["ratio"] == 1.0
    assert rows[1]["steps_per_s"] == pytest.approx(rows[1]["episodes_per_min"] / 60 * 40, rel=1e-6)


def test_default_matrix_on_cpu_and_cuda(monkeypatch):
    import torch
    monkeypatch.setattr(precision, "cpu_bfloat16_native", lambda: True)
    cpu = default_cases(torch.device("cpu"), quick=False)
    assert cpu[0] == BenchCase("original")
    assert {(c.num_envs, c.use_amp) for c in cpu[1:]} == {(n, amp) for n in (256, 1024, 4096) for amp in (False, True)}
    monkeypatch.setattr(precision, "cpu_bfloat16_native", lambda: False)  # emulated bfloat16: AMP is left out
    assert {(c.num_envs, c.use_amp) for c in default_cases(torch.device("cpu"), quick=False)[1:]} == {(n, False) for n in (256, 1024, 4096)}
    assert not any(c.cuda_graphs for c in cpu)
    cuda = default_cases(torch.device("cuda"), quick=False)
    assert {c.cuda_graphs for c in cuda[1:]} == {False, True}


def test_bench_days_prints_throughput_and_memory_against_data_length(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "asym_tui.cli", "bench", "--quick", "--device", "cpu", "--num-envs", "8",
                             "--episode-steps", "40", "--data", "synthetic:seed=3", "--days", "16,8", "--warmup", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert "Throughput and memory against data length" in result.stdout and "…" not in result.stdout
    report = json.loads(out.read_text())
    assert report["days"] == [8, 16]
    curve = report["curve"]
    assert [(row["configuration"], row["days"]) for row in curve] == [("original", 8), ("optimized 8 envs, fp32", 8),
                                                                        ("original", 16), ("optimized 8 envs, fp32", 16)]
    assert curve[2]["train_bars"] > 2 * curve[0]["train_bars"] * 0.9
    for row in curve:
        assert row["error"] == "" and row["steps_per_s"] > 0 and row["optimizer_steps_per_s"] > 0 and row["peak_host_mb"] > 0
    assert [row["ratio"] for row in report["results"] if row["trainer"] == "original"] == [1.0, 1.0]  # ratios within each length


def test_bench_days_refuses_data_that_is_not_synthetic(tmp_path, capsys):
    from asym_tui.cli import main

    assert main(["bench", "--days", "30", "--data", str(tmp_path / "candles.csv")]) == 2
    assert "--days sets the length of the synthetic market" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="the high-water mark resets on Linux only")
def test_peak_host_memory_is_each_configurations_own():
    import numpy as np

    from engine.bench import peak_host_mb, reset_peak_host_memory

    reset_peak_host_memory()
    before = peak_host_mb()
    block = np.ones(50_000_000)  # 400 MB
    assert peak_host_mb() > before + 300
    del block
    reset_peak_host_memory()
    assert peak_host_mb() < before + 100
