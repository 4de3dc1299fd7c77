"""Fees as flags, venue fee levels, and the fee model in every result header."""

import json

import pytest

from asym_tui.cli import main
from conftest import TINY_RUN
from engine.config import FEE_LEVELS, fee_model, load_config


def test_fee_levels_name_themselves_and_custom_costs_say_so():
    assert fee_model(*FEE_LEVELS["spot-taker"]) == "fees 0.1% + slippage 0.05% of each trade's notional (spot-taker)"
    assert (load_config().commission, load_config().slippage) == FEE_LEVELS["spot-taker"]  # the default is a named venue level
    assert fee_model(0.0004, 0.0).endswith("(custom)")


def test_fee_flags_reach_the_run_and_its_header(tmp_path, capsys):
    sets = [f"--set={k}={v}" for k, v in TINY_RUN.items() if k not in ("data",)]
    common = ["--data", TINY_RUN["data"], "--out", str(tmp_path), "--quiet", *sets]
    assert main(["train", *common, "--name", "maker", "--fees", "perp-maker", "--no-short", "--position-size", "0.5"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "fees 0.02% + slippage 0% of each trade's notional (perp-maker); long or flat only; position size 0.5 of equity" in header
    config = json.loads((tmp_path / "maker" / "config.json").read_text())["config"]
    assert (config["commission"], config["slippage"], config["allow_short"], config["position_size"]) == (0.0002, 0.0, False, 0.5)
    summary = json.loads((tmp_path / "maker" / "summary.json").read_text())
    assert summary["fee_model"].startswith("fees 0.02%") and summary["test"]["agent"]["short"] == 0.0
    assert main(["train", *common, "--name", "custom", "--fees", "spot-bnb", "--fee", "0.0004"]) == 0  # an explicit rate wins
    config = json.loads((tmp_path / "custom" / "config.json").read_text())["config"]
    assert (config["commission"], config["slippage"]) == (0.0004, 0.0005)


@pytest.mark.parametrize("flags, message", [(["--fees", "nasdaq"], "invalid choice: 'nasdaq'"),
                                            (["--fee", "-0.1"], "commission must be >= 0"),
                                            (["--position-size", "2"], "position_size must be <= 1")])
def test_bad_fee_flags_exit_2(flags, message, capsys):
    assert main(["train", *flags, "--episodes", "1"]) == 2
    assert message in capsys.readouterr().err


def test_eval_takes_other_costs_and_says_which(tmp_path, capsys):
    sets = [f"--set={k}={v}" for k, v in TINY_RUN.items() if k not in ("data",)]
    assert main(["train", "--data", TINY_RUN["data"], "--out", str(tmp_path), "--name", "run", "--quiet", *sets]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert main(["eval", str(tmp_path / "run"), "--json", "--fees", "zero"]) == 0
    free = json.loads(capsys.readouterr().out)
    assert default["fee_model"].endswith("(spot-taker)") and free["fee_model"].endswith("(zero)")
    assert free["policies"]["buy_and_hold"]["total_return"] > default["policies"]["buy_and_hold"]["total_return"]  # no entry fee
    assert default["bars"] == default["policies"]["agent"]["bars"]  # one count of bars everywhere
