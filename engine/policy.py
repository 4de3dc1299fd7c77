"""A trained policy outside training: export it to a file, load it back, and act on candles.

    from engine.policy import load_policy

    policy = load_policy("runs/A")   # a run folder, its checkpoint.pt, or a file `asym-tui export` wrote
    policy.act(candles)              # -1, 0 or +1: the level the agent holds after its decision at the last bar
    policy.positions(candles)        # that level at every bar (a Series by timestamp; 0 while the windows warm up)
    policy.predict(observation)      # one TradingEnv observation -> greedy action (0 HOLD, 1 BUY, 2 SELL)

The policy is the weights `engine.checkpoints.checkpoint_model` returns: the ones selection chose, which
is a network that always holds when validation showed no edge (`policy.settings.weights` says which).
`candles` is a DataFrame with `timestamp` (or a DatetimeIndex) and open, high, low, close, volume of one
symbol. Features are computed by `engine.features` and normalized with the run's train statistics, and
the level path is walked greedily from flat at the first bar with full windows, exactly as
`engine.evaluation.agent_backtest` walks it (tested equal): pass the history you want the agent to
have seen, since its level depends on where the walk starts.

Exported files (`export_policy`, `asym-tui export`) hold the network, observation -> logits, and these
settings as JSON (windows, feature names, bar length, normalization, market rules and fees): TorchScript
(`torch.jit.load`; the JSON is the extra file `asym_tui_policy.json`) or ONNX (input `observation`,
output `logits`; the JSON is the metadata entry `asym_tui_policy`). The observation is
[macro features | micro features | exposure level | equity ratio], the features normalized as
clip((x - mean) / std, -clip, clip) with the JSON's `normalizer`; the equity ratio is 1.0 unless
`observe_equity` is on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.checkpoints import VERSION, checkpoint_model, load_checkpoint
from engine.env import EnvConfig, TradingEnv, segment_lengths
from engine.errors import ConfigError, DataError, RunError
from engine.evaluation import ACTION_STEP, LEVELS, action_table
from engine.features import Features, Normalizer, concatenate, feature_names, series_features
from engine.files import atomic_write_bytes

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
SETTINGS_NAME = "asym_tui_policy"  # the JSON's name inside an exported file
ACTIONS = ("HOLD", "BUY", "SELL")
CANDLE_COLUMNS = ("open", "high", "low", "close", "volume")

Network = Callable[[np.ndarray], np.ndarray]  # float32 observations (rows, size) -> logits (rows, 3)


@dataclass(frozen=True)
class PolicySettings:
    """What a policy needs besides its weights to act as in training, and the market it was trained for."""

    macro_window: int
    micro_window: int
    bar_seconds: float
    normalizer: Normalizer
    env: EnvConfig  # allow_short and observe_equity shape decisions; fees and position size are for the record
    weights: str  # which weights: selection's verdict, "last weights", or that it holds flat (no edge)
    source: str = ""  # the run it came from

    @classmethod
    def of_checkpoint(cls, state: dict, weights: str, source: str) -> PolicySettings:
        config = state["config"]
        env = EnvConfig(**{field.name: config[field.name] for field in dataclasses.fields(EnvConfig) if field.name in config})
        return cls(config["macro_window"], config["micro_window"], float(state.get("bar_seconds") or 300.0),
                   Normalizer.from_state_dict(state["normalizer"]), env, weights, source)

    @property
    def observation_size(self) -> int:
        return len(self.normalizer.macro_mean) + len(self.normalizer.micro_mean) + 2

    def to_json(self) -> str:
        names = feature_names()
        return json.dumps({
            "format": 1, "asym_tui_version": VERSION, "source": self.source, "weights": self.weights,
            "observation": "[macro features | micro features | exposure level | equity ratio]; features normalized as "
                           "clip((x - mean) / std, -clip, clip) with `normalizer`; equity ratio 1.0 unless env.observe_equity",
            "output": "logits of the actions; the policy takes the argmax (greedy)",
            "actions": list(ACTIONS), "macro_window": self.macro_window, "micro_window": self.micro_window,
            "bar_seconds": self.bar_seconds, "feature_names": {"macro": names, "micro": names},
            "env": dataclasses.asdict(self.env), "normalizer": self.normalizer.state_dict(),
        }, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> PolicySettings:
        try:
            saved = json.loads(text)
            return cls(saved["macro_window"], saved["micro_window"], saved["bar_seconds"], Normalizer.from_state_dict(saved["normalizer"]),
                       EnvConfig(**saved["env"]), saved["weights"], saved.get("source", ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{where}: its {SETTINGS_NAME} settings are unreadable ({type(exc).__name__}: {exc})") from exc


class Policy:
    """A greedy policy with the settings that turn candles into its observations."""

    def __init__(self, network: Network, settings: PolicySettings):
        self.network, self.settings = network, settings

    def predict(self, observation) -> int | np.ndarray:
        """The greedy action for one observation (an int), or for each row of a 2-D array."""
        batch = np.asarray(observation, dtype=np.float32)
        single = batch.ndim == 1
        batch = batch.reshape(1, -1) if single else batch
        if batch.ndim != 2 or batch.shape[1] != self.settings.observation_size:
            raise DataError(f"observation of shape {np.shape(observation)}: this policy reads {self.settings.observation_size} values "
                            "(macro and micro features, exposure level, equity ratio)")
        actions = self.network(batch).argmax(axis=1)
        return int(actions[0]) if single else actions

    def features(self, candles: pd.DataFrame) -> Features:
        """The normalized features of every bar with full windows, each continuous segment apart (as in training)."""
        return self._normalized(candle_frame(candles, self.settings.bar_seconds))

    def _normalized(self, frame: pd.DataFrame) -> Features:
        built, _ = series_features(frame, self.settings.macro_window, self.settings.micro_window)
        return self.settings.normalizer.apply(concatenate([features for _, features in built]))

    def logits_by_level(self, features: Features) -> np.ndarray:
        """(rows, 3, 3): the logits at each row when holding each of LEVELS (the equity entry at 1.0)."""
        table = np.concatenate([features.macro, features.micro], axis=1)
        return np.stack([self.network(np.concatenate([table, np.tile(np.float32([level, 1.0]), (len(table), 1))], axis=1))
                         for level in LEVELS], axis=1)

    def levels(self, features: Features) -> np.ndarray:
        """The level held after the decision at each row, every segment walked from flat."""
        if self.settings.env.observe_equity:
            return self._walk_with_equity(features)
        actions = self.logits_by_level(features).argmax(axis=2)
        next_level = np.clip(action_table(actions), self.settings.env.min_level, 1).tolist()
        levels, start = [], 0
        for length in segment_lengths(features):
            level = 0  # every segment starts flat
            for row in range(start, start + length):
                level = next_level[row][level + 1]
                levels.append(level)
            start += length
        return np.asarray(levels, dtype=np.int64)

    def _walk_with_equity(self, features: Features) -> np.ndarray:
        """A policy that reads its equity: stepped bar by bar through the environment (as agent_backtest does)."""
        env = TradingEnv(features, dataclasses.replace(self.settings.env, episode_steps=len(features)))
        levels = np.zeros(len(features), dtype=np.int64)
        for start, end in zip((0, *env.starts.segment_ends[:-1]), env.starts.segment_ends):
            observation, _ = env.reset(options={"start": int(start)})
            for row in range(start, end - 1):
                observation, _, ruined, _, info = env.step(self.predict(observation))
                levels[row] = info["level"]
                if ruined:
                    return levels
            levels[end - 1] = np.clip(env.level + ACTION_STEP[self.predict(observation)], self.settings.env.min_level, 1)
        return levels

    def positions(self, candles: pd.DataFrame) -> pd.Series:
        """The level held after the decision at each bar of `candles`, by timestamp (0 before the windows fill)."""
        frame = candle_frame(candles, self.settings.bar_seconds)
        features = self._normalized(frame)
        walked = pd.Series(self.levels(features), index=pd.DatetimeIndex(features.timestamps, tz="UTC"))
        return walked.reindex(pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True)), fill_value=0).rename("level")

    def act(self, candles: pd.DataFrame) -> int:
        """The level (-1, 0, +1) the agent holds after its decision at the last bar of `candles`."""
        return int(self.positions(candles).iloc[-1])


def candle_frame(candles: pd.DataFrame, bar_seconds: float) -> pd.DataFrame:
    """One symbol's candles with a `timestamp` column, checked: the columns are there and time increases."""
    if "timestamp" not in candles and isinstance(candles.index, pd.DatetimeIndex):
        candles = candles.rename_axis("timestamp").reset_index()
    missing = [column for column in ("timestamp", *CANDLE_COLUMNS) if column not in candles]
    if missing:
        raise DataError(f"candles: missing column(s) {', '.join(missing)}; found {', '.join(map(str, candles.columns))}")
    if "series" in candles and candles["series"].nunique() > 1:
        raise DataError(f"candles: {candles['series'].nunique()} series ({', '.join(map(str, candles['series'].unique()[:3]))}, ...); "
                        "pass one symbol's candles")
    steps = candles["timestamp"].diff().iloc[1:]
    if (steps <= pd.Timedelta(0)).any():
        row = int(np.flatnonzero((steps <= pd.Timedelta(0)).to_numpy())[0]) + 1
        raise DataError(f"candles: row {row}, column 'timestamp': {candles['timestamp'].iloc[row]} does not follow the row before it")
    if len(steps) and steps.median().total_seconds() != bar_seconds:
        warnings.warn(f"candles have {steps.median().total_seconds() / 60:g}-minute bars; the policy was trained on "
                      f"{bar_seconds / 60:g}-minute bars", stacklevel=3)
    return candles.reset_index(drop=True)


def torch_network(module: torch.nn.Module) -> Network:
    @torch.no_grad()
    def logits(observations: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(observations)).float().numpy()

    return logits


def load_policy(path: str | Path) -> Policy:
    """A run folder, a checkpoint, or an exported TorchScript (.pt) or ONNX (.onnx) policy, ready to act."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _load_onnx(path)
    if path.is_file() and _is_torchscript(path):
        extra = {f"{SETTINGS_NAME}.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch, still the portable format asked for
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return Policy(torch_network(module.eval()), PolicySettings.from_json(extra[f"{SETTINGS_NAME}.json"], str(path)))
    state = load_checkpoint(path)
    model, weights = checkpoint_model(state)
    return Policy(torch_network(model), PolicySettings.of_checkpoint(state, weights, str(path)))


def _is_torchscript(path: Path) -> bool:
    """An exported TorchScript file carries our settings as an extra file; a checkpoint does not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"extra/{SETTINGS_NAME}.json") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _load_onnx(path: Path) -> Policy:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"{path}: running an ONNX policy needs onnxruntime: pip install 'asym-tui[onnx]'") from None
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise RunError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    settings = session.get_modelmeta().custom_metadata_map.get(SETTINGS_NAME)
    if settings is None:
        raise RunError(f"{path}: an ONNX model without asym-tui policy settings (metadata {SETTINGS_NAME})")
    return Policy(lambda observations: session.run(["logits"], {"observation": observations})[0], PolicySettings.from_json(settings, str(path)))


def export_policy(run: str | Path, format: str = "torchscript", out: str | Path | None = None) -> tuple[Path, PolicySettings]:
    """Write a run's chosen policy (network and settings) to a TorchScript or ONNX file; default `<run>/policy.pt|.onnx`."""
    if format not in FORMATS:
        raise ConfigError(f"export format {format!r} is not accepted; choose one of {', '.join(FORMATS)}")
    state = load_checkpoint(run)
    model, weights = checkpoint_model(state)
    settings = PolicySettings.of_checkpoint(state, weights, str(run))
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    target = Path(out).expanduser() if out else run_dir / f"policy{FORMATS[format]}"
    if not target.parent.is_dir():
        raise RunError(f"{target}: folder {target.parent} does not exist")
    example = torch.zeros(2, settings.observation_size)
    atomic_write_bytes(target, _torchscript_bytes(model, example, settings) if format == "torchscript" else _onnx_bytes(model, example, settings))
    return target, settings


def _torchscript_bytes(model: torch.nn.Module, example: torch.Tensor, settings: PolicySettings) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(model, example), buffer, _extra_files={f"{SETTINGS_NAME}.json": settings.to_json()})
    return buffer.getvalue()


def _onnx_bytes(model: torch.nn.Module, example: torch.Tensor, settings: PolicySettings) -> bytes:
    if not all(importlib.util.find_spec(package) for package in ("onnx", "onnxscript")):  # torch.onnx's exporter needs both
        raise ConfigError("export --format onnx needs the onnx extra: pip install 'asym-tui[onnx]'")
    import onnx
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it logs what it skips (torchvision operators) and prints its stages
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), input_names=["observation"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("rows")},), dynamo=True, verbose=False)
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {SETTINGS_NAME: settings.to_json()})
    return proto.SerializeToString()
