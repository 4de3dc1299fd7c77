"""Export and act: a tiny trained run, exported to TorchScript and ONNX, acts exactly as its own backtest."""

import importlib.util
import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from asym_tui.cli import main
from conftest import TINY_RUN
from engine.checkpoints import checkpoint_model, load_checkpoint
from engine.env import TradingEnv
from engine.errors import DataError
from engine.evaluation import LEVELS, agent_backtest, greedy_actions, source_features
from engine.features import Normalizer
from engine.policy import export_policy, load_policy
from engine.synthetic import generate_candles

FRESH = "synthetic:days=4,seed=4242"  # a series the run never saw
LOGIT_LAYER = ("head.layers.3.", "heads.head.layers.3.")  # the decision layer (the head is in the state dict twice)


def trading_weights(weights: dict, seed: int) -> dict:
    """The trained weights with a seeded random decision layer: tiny runs learn to hold, and a policy that
    never trades could not show a misaligned feature, level or bar."""
    generator = torch.Generator().manual_seed(seed)
    layer = torch.randn(weights["head.layers.3.weight"].shape, generator=generator)
    return {**weights, **{f"{prefix}weight": layer for prefix in LOGIT_LAYER}, **{f"{prefix}bias": torch.zeros(3) for prefix in LOGIT_LAYER}}


def trained_trading_run(tmp_path_factory):
    """A tiny run trained for real whose chosen policy trades; trained once per test session (cached on disk)."""
    from engine.config import load_config
    from engine.runs import execute_run

    run_dir = tmp_path_factory.getbasetemp() / "trading-run" / "run"
    if (run_dir / "checkpoint.pt").is_file():
        return run_dir
    execute_run(load_config(None, {**TINY_RUN, "max_episodes": 8, "select_best": False, "out_dir": str(run_dir.parent), "run_name": "run"}))
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    features, bar_seconds = fresh_features(state)
    for seed in range(20):  # the first seeded decision layer that goes long, short and flat
        state["trainer"]["model"] = trading_weights(state["trainer"]["model"], seed)
        model, _ = checkpoint_model(state)
        if set(agent_backtest(model, features, checkpoint_env(state), bar_seconds).levels) == set(LEVELS):
            break
    torch.save(state, run_dir / "checkpoint.pt")
    return run_dir


def checkpoint_env(state):
    from engine.config import RunConfig, apply_overrides

    return apply_overrides(RunConfig(), state["config"], "checkpoint").env_config()


def fresh_features(state):
    """The fresh series through the engine's own path (source_features), as `asym-tui eval` reads it."""
    config = state["config"]
    return source_features(FRESH, Normalizer.from_state_dict(state["normalizer"]), config["macro_window"], config["micro_window"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_trading_run(tmp_path_factory)


@pytest.fixture(scope="module")
def expected(run_dir):
    """The run's own backtest on the fresh series: its greedy actions per (bar, level) and its level path."""
    state = load_checkpoint(run_dir)
    model, _ = checkpoint_model(state)
    features, bar_seconds = fresh_features(state)
    backtest = agent_backtest(model, features, checkpoint_env(state), bar_seconds)
    return {"features": features, "actions": greedy_actions(model, features), "levels": backtest.levels}


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """The run as load_policy reads it: its folder, and the files export wrote (ONNX where the extra is installed)."""
    tmp_path = tmp_path_factory.mktemp("exported")
    paths = {"checkpoint": run_dir, "torchscript": export_policy(run_dir, "torchscript", tmp_path / "policy.pt")[0]}
    if all(importlib.util.find_spec(package) for package in ("onnx", "onnxscript", "onnxruntime")):  # the onnx extra
        paths["onnx"] = export_policy(run_dir, "onnx", tmp_path / "policy.onnx")[0]
    return paths


def test_exported_files_and_load_policy_act_exactly_as_the_runs_backtest(exported, expected):
    candles = generate_candles(days=4, seed=4242)
    levels = expected["levels"]
    assert {-1, 0, 1} <= set(levels) and np.count_nonzero(np.diff(levels)) > 10  # the comparison can fail
    warmup = len(candles) - len(levels) - 1
    for kind, path in exported.items():
        policy = load_policy(path)
        np.testing.assert_array_equal(policy.features(candles).macro, expected["features"].macro)
        positions = policy.positions(candles)
        assert len(positions) == len(candles) and (positions.iloc[:warmup] == 0).all(), kind  # flat while the windows fill
        assert positions.index[warmup] == pd.Timestamp(expected["features"].timestamps[0], tz="UTC")
        assert np.array_equal(positions.iloc[warmup:-1].to_numpy(), levels), kind  # the last bar's decision has no next bar to trade
    policy = load_policy(exported["torchscript"])
    assert policy.act(candles) == positions.iloc[-1]
    assert policy.act(candles.iloc[:-1]) == positions.iloc[-2]  # the same bar as the last of a shorter frame: the same level


def test_the_exported_files_run_without_asym_tui(exported, expected):
    """The files alone (torch.jit.load, onnxruntime) and their JSON settings give the backtest's actions."""
    paths = exported
    features = expected["features"]
    observations = np.concatenate([features.macro, features.micro], axis=1)
    with_level = lambda level: np.concatenate([observations, np.tile(np.float32([level, 1.0]), (len(observations), 1))], axis=1)
    extra = {"asym_tui_policy.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(paths["torchscript"]), _extra_files=extra)
    settings = json.loads(extra["asym_tui_policy.json"])
    assert settings["macro_window"] == TINY_RUN["macro_window"] and settings["bar_seconds"] == 300
    assert settings["env"]["commission"] == 0.001 and len(settings["feature_names"]["macro"]) == features.macro.shape[1]
    with torch.no_grad():
        actions = np.stack([module(torch.from_numpy(with_level(level))).argmax(1).numpy() for level in LEVELS], axis=1)
    assert np.array_equal(actions, expected["actions"])
    if "onnx" in paths:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
        assert json.loads(session.get_modelmeta().custom_metadata_map["asym_tui_policy"])["normalizer"] == settings["normalizer"]
        actions = np.stack([session.run(["logits"], {"observation": with_level(level)})[0].argmax(1) for level in LEVELS], axis=1)
        assert np.array_equal(actions, expected["actions"])


def test_predict_takes_the_environments_observation(run_dir, expected):
    policy = load_policy(run_dir)
    env = TradingEnv(expected["features"])
    observation, _ = env.reset(options={"start": 30})
    assert policy.predict(observation) == expected["actions"][30, LEVELS.index(0)]
    observations = np.stack([observation, np.concatenate([observation[:-2], [1.0, 1.0]])])
    assert list(policy.predict(observations)) == [expected["actions"][30, 1], expected["actions"][30, 2]]
    with pytest.raises(DataError, match=r"shape \(84,\): this policy reads 86 values"):
        policy.predict(observation[:-2])


def test_a_policy_that_reads_its_equity_walks_the_environment(run_dir, expected, tmp_path):
    """observe_equity: the decision depends on the equity path, stepped bar by bar as agent_backtest does."""
    copy = tmp_path / "equity-run"
    shutil.copytree(run_dir, copy)
    state = torch.load(copy / "checkpoint.pt", weights_only=True)
    state["config"]["observe_equity"] = True
    torch.save(state, copy / "checkpoint.pt")
    model, _ = checkpoint_model(state)
    features = expected["features"].rows(slice(0, 400))
    levels = agent_backtest(model, features, checkpoint_env(state), 300.0).levels
    for path in (copy, export_policy(copy, "torchscript")[0]):
        walked = load_policy(path).levels(features)
        assert np.array_equal(walked[:-1], levels), path


def test_candles_in_other_shapes_and_bad_candles(run_dir):
    policy = load_policy(run_dir)
    candles = generate_candles(days=3, seed=5)
    assert policy.act(candles.set_index("timestamp")) == policy.act(candles)  # a DatetimeIndex works as well
    with pytest.raises(DataError, match="candles: missing column.s. volume"):
        policy.act(candles.drop(columns="volume"))
    shuffled = candles.iloc[[0, 2, 1, *range(3, len(candles))]]
    with pytest.raises(DataError, match="candles: row 2, column 'timestamp'"):
        policy.act(shuffled)
    with pytest.raises(DataError, match="too few for macro_window"):
        policy.act(candles.iloc[:100])
    with pytest.warns(UserWarning, match="10-minute bars; the policy was trained on 5-minute bars"):
        policy.act(candles.iloc[::2])


def test_export_command(run_dir, tmp_path, capsys):
    out = tmp_path / "agent.pt"
    assert main(["export", str(run_dir / "checkpoint.pt"), "--out", str(out), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["file"] == str(out) and facts["format"] == "torchscript" and facts["weights"] == "last weights"
    candles = generate_candles(days=3, seed=6)
    assert load_policy(out).act(candles) == load_policy(run_dir).act(candles)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "missing" / "agent.pt")]) == 2
    error = capsys.readouterr().err
    assert "agent.pt: folder" in error and "does not exist" in error and error.count("\n") == 1
    assert main(["export", str(run_dir), "--format", "keras"]) == 2
    assert "invalid choice: 'keras'" in capsys.readouterr().err


def test_onnx_without_the_extra_and_unreadable_files_are_one_line(run_dir, tmp_path, capsys, monkeypatch):
    from engine.errors import RunError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "onnxscript" else find_spec(name, *rest))
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "agent.onnx")]) == 2
    assert "export --format onnx needs the onnx extra: pip install 'asym-tui[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "agent.onnx").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a policy")
    with pytest.raises(RunError, match="junk.pt: refused"):  # not a policy: read as a checkpoint, which it is not either
        load_policy(tmp_path / "junk.pt")
    if find_spec("onnxruntime"):
        (tmp_path / "junk.onnx").write_bytes(b"not a model either")
        with pytest.raises(RunError, match="junk.onnx: not a readable ONNX model"):
            load_policy(tmp_path / "junk.onnx")
