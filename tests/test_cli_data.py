import subprocess
import sys

from asym_tui.cli import main


def test_data_inspect_synthetic_prints_the_facts(capsys):
    assert main(["data", "inspect", "synthetic:days=10,seed=1"]) == 0
    out = capsys.readouterr().out
    for fact in ("2,880", "│ 5m ", "macro 42 + micro 42", "train", "validation", "test", "featurization"):
        assert fact in out


def test_bad_source_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2024-01-01,1,2,1,x,3\n")
    result = subprocess.run([sys.executable, "-m", "asym_tui.cli", "data", "inspect", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "line 2, column 'close'" in result.stderr
