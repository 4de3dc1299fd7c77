"""The third round of hostile input, run side (issue 21 points 9 and 10): one line and exit 2, nothing half-made."""

import pytest

from asym_tui.cli import main


@pytest.mark.parametrize("args, message", [
    (["train", "--set", "ppo_minibatches=100000"], "ppo_minibatches (100000) leaves fewer than 2 samples per minibatch"),
    (["train", "--duration", "0s"], "--duration 0s: give a positive time"),
    (["sweep", "--grid", "num_envs=16", "--grid", "num_envs=32"], "num_envs is already an axis"),
    (["sweep", "--grid", "num_envs=16", "--seeds", "0"], "--seeds must be at least 1"),
    (["sweep", "--grid", "num_envs=16", "--seeds", "-3"], "--seeds must be at least 1"),
    (["compare", "--seeds", "0"], "--seeds must be at least 1"),
])
def test_bad_run_values_exit_2_with_one_line(args, message, tmp_path, capsys):
    assert main([*args, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no empty sweep or run folder left behind


def test_a_closed_pipe_ends_quietly():
    """`asym-tui ... | head` that stops reading: exit 0, no BrokenPipeError traceback."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "asym_tui.cli", "data", "inspect", "synthetic:days=4", "--json", "--macro-window", "64",
                              "--micro-window", "16"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # the reader is gone before anything is written
    assert child.wait(timeout=120) == 0
    assert b"Traceback" not in child.stderr.read()
