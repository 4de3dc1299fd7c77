import json
import subprocess
import sys

import pytest

from asym_tui.cli import main
from conftest import TINY_RUN


def tiny_flags(tmp_path):
    sets = [f"--set={k}={v}" for k, v in TINY_RUN.items() if k not in ("data", "max_episodes")]
    return ["--data", TINY_RUN["data"], "--episodes", "16", "--out", str(tmp_path / "runs"), "--quiet", *sets]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "asym_tui.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--set", "colour=blue"], "unknown key 'colour'"),
    (["train", "--set", "trainer=fast"], "trainer = 'fast' is not accepted; choose one of original, optimized"),
    (["train", "--num-envs", "0"], "num_envs must be > 0"),
    (["train", "--duration", "soon"], "duration 'soon'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--data", "missing.csv", "--episodes", "1"], "missing.csv: no such file"),
    (["eval", "nowhere/checkpoint.pt"], "no checkpoint there"),
    (["compare", "only-one"], "exactly two run folders"),
])
def test_user_errors_are_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0


def test_bad_preset_file_names_the_key(tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text('num_envs = "many"\n')
    result = run_cli("train", "--preset", str(preset))
    assert result.returncode == 2 and "num_envs must be an integer" in result.stderr and "mine.toml" in result.stderr


def test_the_console_command_exits_with_every_file_and_its_whole_output(tmp_path):
    """`python -m asym_tui.cli` is the console command (`run`): it skips Python's teardown, so whatever was
    buffered for the pipe and every file of the run must already be out when it exits."""
    result = run_cli("train", *tiny_flags(tmp_path), "--name", "quick-exit", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["throughput"]["episodes"] >= 16
    run_dir = tmp_path / "runs" / "quick-exit"
    assert json.loads((run_dir / "summary.json").read_text())["throughput"] == summary["throughput"]
    assert all((run_dir / name).stat().st_size > 0 for name in ("checkpoint.pt", "metrics.csv", "equity_test.csv", "report.png"))


def test_train_then_eval_then_compare_folders(tmp_path, capsys):
    assert main(["train", *tiny_flags(tmp_path), "--name", "first"]) == 0
    assert main(["train", *tiny_flags(tmp_path), "--trainer", "original", "--name", "second"]) == 0
    out = capsys.readouterr().out
    assert "buy and hold" in out and "random" in out
    run_dir = tmp_path / "runs" / "first"
    assert main(["eval", str(run_dir / "checkpoint.pt"), "--split", "validation"]) == 0
    assert "flat" in capsys.readouterr().out
    assert main(["eval", str(run_dir), "--json"]) == 0  # the run's own data, test split, chosen weights
    report, summary = json.loads(capsys.readouterr().out), json.loads((run_dir / "summary.json").read_text())
    for policy in ("agent", "buy_and_hold", "flat", "best_constant", "trailing_rule"):
        for metric in ("sharpe", "total_return", "max_drawdown", "trades"):
            assert report["policies"][policy][metric] == pytest.approx(summary["test"][policy][metric]), (policy, metric)
    assert main(["compare", str(tmp_path / "runs" / "second"), str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "episodes/min" in out and "speedup" in out and "Sharpe (test)" in out


def test_compare_trains_both_and_prints_the_table(tmp_path, capsys):
    assert main(["compare", *tiny_flags(tmp_path)]) == 0
    out = capsys.readouterr().out
    for row in ("episodes/min", "CPU use", "peak memory", "final portfolio", "Sharpe (test)", "max drawdown", "speedup", "Verdict"):
        assert row in out
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("compare-*/*/summary.json")]
    assert sorted(s["trainer"] for s in summaries) == ["optimized", "original"]
    assert len({s["seed"] for s in summaries}) == 1 and len({s["data"] for s in summaries}) == 1


def test_compare_over_seeds_reports_each_seed_the_iqm_its_interval_and_the_probability_of_improvement(tmp_path, capsys):
    assert main(["compare", *tiny_flags(tmp_path), "--seeds", "2", "--seed", "5", "--json", "--set", "unseen_series=2"]) == 0
    report = json.loads(capsys.readouterr().out)
    verdict = report["verdict"]
    assert verdict["measure"] == "Sharpe on unseen series" and report["labels"] == ["original", "optimized (ppo)"]
    for label, side in verdict["sides"].items():
        assert side["seeds"] == [5, 6] and len(side["runs"]) == 2
        low, high = side["interval"]
        assert low <= side["iqm"] <= high and side["worst"] == min(side["runs"])
        assert len(side["time_to_quality_s"]) == 2
    improvement = verdict["probability_of_improvement"]
    assert 0 <= improvement["interval"][0] <= improvement["value"] <= improvement["interval"][1] <= 1
    assert improvement["of"] == "optimized (ppo) > original"
    folder = tmp_path / "runs" / report["folder"].split("/")[-1]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["optimized-seed5", "optimized-seed6", "original-seed5", "original-seed6"]
    assert json.loads((folder / "compare.json").read_text())["verdict"] == verdict


def test_presets_list_and_show(capsys):
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("quick", "original", "optimized", "apple-m1", "apple-m2", "apple-m3", "cuda", "debug"):
        assert name in out
    assert main(["presets", "show", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "num_envs" in out and "37 Linear layers" in out and "83,782" in out


def test_every_builtin_preset_is_valid():
    from engine.config import load_config, preset_paths
    for name in preset_paths():
        load_config(name)


def test_user_presets_are_saved_and_listed(tmp_path, monkeypatch):
    from engine.config import load_config, preset_paths, save_user_preset
    monkeypatch.setenv("ASYM_TUI_CONFIG_DIR", str(tmp_path))
    save_user_preset("mine", load_config("quick", {"num_envs": 24}), "my settings")
    assert "mine" in preset_paths()
    assert load_config("mine").num_envs == 24


def test_scriptable_outputs_and_version(tiny_config, tmp_path, capsys):
    import json

    from conftest import TINY_RUN
    from engine.runs import VERSION

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"asym-tui {VERSION}" and VERSION != "0+unknown"
    sets = [f"--set={k}={v}" for k, v in TINY_RUN.items() if k not in ("data", "max_episodes", "duration_s")]
    assert main(["train", "--data", TINY_RUN["data"], "--episodes", "8", "--out", str(tmp_path), "--name", "a", "--json", *sets, "--set", "duration_s=0"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["run_dir"] == str(tmp_path / "a") and trained["status"] == "completed"
    assert trained["throughput"]["optimizer_steps"] > 0 and "sharpe" in trained["test"]["agent"]
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert {row["metric"] for row in compared["rows"]} >= {"optimizer steps/s", "Sharpe (unseen series)", "time to quality"}
    assert any("same run" in warning for warning in compared["warnings"]) and {row["winner"] for row in compared["rows"]} == {"—"}
    assert main(["train", "--data", TINY_RUN["data"], "--episodes", "8", "--out", str(tmp_path), "--name", "b", "--algorithm", "reinforce", *sets,
                 "--set", "duration_s=0"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert compared["labels"] == ["optimized (ppo)", "optimized (reinforce)"] and not compared["warnings"]
    assert {row["winner"] for row in compared["rows"]} <= {"optimized (ppo)", "optimized (reinforce)", "—"}
    assert main(["data", "inspect", "synthetic:days=4", "--json", "--macro-window", "64", "--micro-window", "16"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["rows"] == 4 * 288 and facts["timeframe_s"] == 300 and len(facts["segments"]) == 1


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("2m", 120), ("1.5h", 5400), ("1h30m", 5400), ("90", 90), ("2min", 120)])
def test_durations_read_like_pandas_timedeltas(text, seconds):
    from engine.config import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "-5s", "nan", ""])
def test_bad_durations_are_refused(text):
    from engine.config import ConfigError, parse_duration

    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)


def test_packaging_facts():
    import tomllib
    from pathlib import Path

    from engine.config import PRESETS_DIR

    root = Path(__file__).resolve().parent.parent
    assert PRESETS_DIR.parent.name == "engine" and (PRESETS_DIR / "quick.toml").is_file()  # inside the package, so in the wheel
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    dependencies = {d.split(">")[0].split("=")[0].split(";")[0].strip(): d for d in project["dependencies"]}
    assert "==" not in dependencies["textual"] and "==" not in dependencies["textual-plotext"]  # ranges for users
    assert "sys_platform" in dependencies["nvidia-ml-py"]
    constraints = (root / ".ci" / "constraints.txt").read_text()
    assert "textual==" in constraints and "textual-plotext==" in constraints  # exact pins for the snapshots
    assert project["license"] == "MIT" and project["classifiers"]
