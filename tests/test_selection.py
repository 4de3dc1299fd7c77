"""Model selection: validation that sees regime changes, and the "no edge ⇒ flat" rule, through every output."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from engine.config import load_config
from engine.evaluation import agent_backtest, target_table, trailing_rule_targets
from engine.model import AsymmetricPolicyNetwork, hold_flat
from engine.runs import prepare_data
from engine.selection import NO_EDGE, Selection, ValidationSet, weights_of


@pytest.fixture(scope="module")
def default_market():
    config = load_config("quick")
    return config, prepare_data(config)


def enter_once_and_hold(env_config):
    """Enters in the trend's direction while flat, then never lets go: the collapse issue 18 describes."""
    def table(features):
        moves = target_table(trailing_rule_targets(features, env_config))
        moves[:, 0], moves[:, 2] = -1, 1
        return moves
    return table


def test_enter_once_and_hold_loses_to_a_trend_follower_once_validation_holds_regime_changes(default_market):
    config, splits = default_market
    env_config = config.env_config()
    follow = lambda features: target_table(trailing_rule_targets(features, env_config))
    hold = enter_once_and_hold(env_config)
    split_only = ValidationSet.from_splits(dataclasses.replace(splits, selection_series=()), env_config)
    # The default market's validation split is one long bear phase: there the two look alike
    assert split_only.score_policy(hold) >= split_only.score_policy(follow) - split_only.noise
    validation = ValidationSet.from_splits(splits, env_config)
    assert len(validation.series) == 2 + 2 * config.validation_series
    assert validation.score_policy(follow) > validation.score_policy(hold) + 3 * validation.noise
    assert validation.score_policy(hold) < validation.edge_bar(1)  # it would not even be allowed to trade


def test_constant_positions_cannot_score(default_market):
    config, splits = default_market
    validation = ValidationSet.from_splits(splits, config.env_config())
    assert abs(validation.baselines["long"]) < validation.noise and abs(validation.baselines["short"]) < validation.noise
    assert validation.benchmark >= 0.0 == validation.baselines["flat"]


def record(score: float, tag: float) -> dict:
    weights = {name: torch.full_like(value, tag) for name, value in AsymmetricPolicyNetwork().state_dict().items()}
    return {"episodes": int(tag), "val_score": score, "val_sharpe": score, "model": weights}


def test_selection_keeps_the_latest_weights_within_noise_of_the_best_when_they_show_an_edge():
    selection = Selection()
    for tag, score in enumerate([4.0, 12.0, 11.5], start=1):
        chosen = selection.consider(record(score, tag), noise=1.0, edge_bar=5.0, benchmark=0.5)
    assert chosen["episodes"] == 3 and not chosen["no_edge"] and selection.top["episodes"] == 2
    chosen = selection.consider(record(3.0, 4), noise=1.0, edge_bar=5.0, benchmark=0.5)
    assert chosen["episodes"] == 3  # a later, worse checkpoint does not replace it


def test_selection_falls_back_to_the_best_then_to_flat():
    selection = Selection()
    selection.consider(record(6.0, 1), noise=2.0, edge_bar=5.5, benchmark=0.0)
    chosen = selection.consider(record(4.5, 2), noise=2.0, edge_bar=5.5, benchmark=0.0)
    assert chosen["episodes"] == 1 and not chosen["no_edge"]  # the latest within noise is below the bar; the best clears it
    nothing = Selection()
    chosen = nothing.consider(record(2.0, 1), noise=2.0, edge_bar=5.5, benchmark=0.0)
    assert chosen["no_edge"] and chosen["val_score"] == 0.0 and chosen["best_val_score"] == 2.0 and chosen["edge_bar"] == 5.5


def test_a_flat_policy_never_trades(tiny_splits):
    model = AsymmetricPolicyNetwork(dataclasses.replace(AsymmetricPolicyNetwork().shape, macro_dim=tiny_splits.train.macro.shape[1],
                                                        micro_dim=tiny_splits.train.micro.shape[1]))
    with torch.no_grad():
        model.head.layers[-1].bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # eager to buy
    assert agent_backtest(model, tiny_splits.test, load_config().env_config(), 300.0).metrics["trades"] > 0
    model.load_state_dict(hold_flat(weights_of(model)))  # copies, as a checkpoint holds them
    flat = agent_backtest(model, tiny_splits.test, load_config().env_config(), 300.0)
    assert flat.metrics["trades"] == 0 and np.all(flat.levels == 0) and flat.equity[-1] == 1.0


def random_walk_csv(path):
    """A market with nothing to learn: Gaussian log returns, no drift, no regimes."""
    import pandas as pd

    rng = np.random.default_rng(11)
    bars = 5000
    close = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.002, bars)))
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-03-01", periods=bars, freq="5min", tz="UTC"), "open": np.r_[close[0], close[:-1]],
                          "close": close, "volume": rng.uniform(5, 10, bars)})
    frame["high"], frame["low"] = frame[["open", "close"]].max(axis=1) * 1.0005, frame[["open", "close"]].min(axis=1) * 0.9995
    frame.to_csv(path, index=False)
    return str(path)


def test_no_edge_on_a_random_walk_is_flat_and_every_output_says_so(tmp_path, capsys):
    from asym_tui.cli import main

    data = random_walk_csv(tmp_path / "walk.csv")
    common = ["--data", data, "--out", str(tmp_path / "runs"), "--episodes", "160", "--num-envs", "8", "--quiet",
              "--set", "macro_window=64", "--set", "micro_window=16", "--set", "episode_steps=64", "--set", "eval_every_s=0"]
    assert main(["train", "--name", "walk", *common]) == 0
    words = lambda text: " ".join(text.split())  # rich wraps long lines to the terminal
    assert NO_EDGE in words(capsys.readouterr().out)
    summary = json.loads((tmp_path / "runs" / "walk" / "summary.json").read_text())
    assert summary["selected_model"]["no_edge"] and summary["test"]["agent"]["trades"] == 0
    assert main(["eval", str(tmp_path / "runs" / "walk"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert NO_EDGE in report["weights"] and report["policies"]["agent"]["trades"] == 0
    assert main(["eval", str(tmp_path / "runs" / "walk")]) == 0
    assert NO_EDGE in words(capsys.readouterr().out)
