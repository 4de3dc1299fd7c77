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
