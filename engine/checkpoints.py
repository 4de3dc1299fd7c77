"""Checkpoints: what a run saves to resume and to be judged later — config, normalizer statistics, model
shape, trainer state (weights, optimizers, counters, RNG) — as plain data only, loaded with
`weights_only`; and the greedy backtest of a checkpoint's chosen model on any data (`asym-tui eval`)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from engine.config import RunConfig, apply_overrides, trading_costs
from engine.errors import RunError
from engine.evaluation import evaluate_split, source_features
from engine.data import load_candles
from engine.features import Features, Normalizer, series_features, split_intervals, split_windows, take
from engine.files import atomic_write_bytes
from engine.loop import Trainer
from engine.model import AsymmetricPolicyNetwork, ModelShape
from engine.selection import chosen_weights, selection_text

try:
    VERSION = importlib.metadata.version("asym-tui")  # one source of truth: the package metadata
except importlib.metadata.PackageNotFoundError:  # running from a checkout that was never installed
    VERSION = "0+unknown"
CHECKPOINT_FORMAT = 2  # 2: plain data only (loadable with weights_only), PPO state

CHECKPOINT_KEYS = ("format", "config", "normalizer", "model_shape", "trainer")
TRAINER_KEYS = ("model", "learner", "counters", "rng")


def save_checkpoint(path: Path, trainer: Trainer, normalizer: Normalizer) -> None:
    state = {"format": CHECKPOINT_FORMAT, "version": VERSION, "config": trainer.config.to_dict(), "bar_seconds": trainer.splits.bar_seconds,
             "normalizer": normalizer.state_dict(), "model_shape": dataclasses.asdict(trainer.model.shape),
             "trainer": trainer.state_dict()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise RunError(f"{path}: no checkpoint there")
    try:
        # Tensors and plain Python values only: a pickle that would run code is refused, never executed.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RunError(f"{path}: refused — it holds objects other than tensors and plain values "
                       "(a checkpoint that could run code when loaded)") from exc
    except Exception as exc:
        raise RunError(f"{path}: not a readable asym-tui checkpoint (corrupted or truncated: {type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("version", "unknown") if isinstance(state, dict) else "unknown"
        raise RunError(f"{path}: checkpoint from asym-tui version {found} (format {state.get('format') if isinstance(state, dict) else '?'}); "
                       f"this version {VERSION} reads format {CHECKPOINT_FORMAT}")
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    missing += [f"trainer.{key}" for key in TRAINER_KEYS if key not in (state.get("trainer") or {})]
    if missing:
        raise RunError(f"{path}: incomplete checkpoint (missing {', '.join(missing)})")
    return state


def checkpoint_model(state: dict, last: bool = False) -> tuple[AsymmetricPolicyNetwork, str]:
    """The network a checkpoint holds: the weights selection chose (default) or the last ones."""
    model = AsymmetricPolicyNetwork(ModelShape(**state["model_shape"]))
    best = chosen_weights(state["trainer"].get("best"), state["config"].get("select_best", True), last)
    use_best = best is not None
    try:
        model.load_state_dict(best["model"] if use_best else state["trainer"]["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise RunError(f"the checkpoint's weights do not fit its model shape ({str(exc).splitlines()[0][:160]})") from exc
    weights = selection_text(best) if use_best else "last weights"
    return model.eval(), weights


def checkpoint_features(source: str, config: RunConfig, normalizer: Normalizer, split: str) -> tuple[Features, float]:
    """A source as the run saw it, normalized with the run's statistics: all of it, or one split cut the way the
    run cut its own data (fractions, or its explicit test windows and purge)."""
    if split == "all":
        return source_features(source, normalizer, config.macro_window, config.micro_window)
    candles = load_candles(source)
    pieces = [features for _, features in series_features(candles, config.macro_window, config.micro_window)[0]]
    stamps = np.sort(np.concatenate([piece.timestamps for piece in pieces]))
    parts = split_intervals(stamps, config.train_fraction, config.validation_fraction, split_windows(config, candles))[split]
    return normalizer.apply(take(pieces, parts)), candles.attrs["timeframe"].total_seconds()


def evaluate_checkpoint(checkpoint: str | Path, source: str | None = None, split: str = "all", last: bool = False,
                        seed: int = 0, with_backtest: bool = False, overrides: dict | None = None) -> dict:
    """Greedy backtest of a run's model on any data source (or its own), next to the baselines. `with_backtest`
    adds the agent's path itself under "agent_path" (not JSON: for positions and trades, engine/trades.py)."""
    state = load_checkpoint(checkpoint)
    config = apply_overrides(apply_overrides(RunConfig(), state["config"], f"checkpoint {checkpoint}"), overrides or {}, "eval")
    source = source or config.data
    features, bar_seconds = checkpoint_features(source, config, Normalizer.from_state_dict(state["normalizer"]), split)
    expected = state["model_shape"]["macro_dim"] + state["model_shape"]["micro_dim"]
    if features.macro.shape[1] + features.micro.shape[1] != expected:
        raise RunError(f"{checkpoint}: the model reads {expected} features, this data gives "
                       f"{features.macro.shape[1] + features.micro.shape[1]}")
    model, weights = checkpoint_model(state, last)
    results = evaluate_split(model, features, config.env_config(), bar_seconds, seed)
    from engine.metrics import periods_per_year

    trained_bar = state.get("bar_seconds")
    notes = [] if trained_bar in (None, bar_seconds) else [
        f"the model was trained on {trained_bar / 60:g}-minute bars; this data has {bar_seconds / 60:g}-minute bars"]
    report = {"checkpoint": str(checkpoint), "data": source, "split": split, "bars": len(features) - 1, "weights": weights, "notes": notes,
              "fee_model": trading_costs(config),
              "bar_seconds": bar_seconds, "periods_per_year": periods_per_year(bar_seconds),
              "policies": {name: backtest.metrics for name, backtest in results.items()}}
    if with_backtest:
        report["agent_path"] = {"backtest": results["agent"], "series": features, "env_config": config.env_config(),
                                "initial_equity": config.initial_equity}
    return report
