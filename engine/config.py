"""The run config (one dataclass, every field documented in one line) and presets (partial configs in TOML)."""

from __future__ import annotations

import dataclasses
import math
import os
from importlib import resources
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomli_w

from engine.env import EnvConfig
from engine.features import parse_windows
from engine.errors import ConfigError

PRESETS_DIR = Path(str(resources.files("engine") / "presets"))  # shipped inside the package (wheel included)
CHOICES = {
    "trainer": ("original", "optimized"),
    "algorithm": ("ppo", "reinforce"),
    "device": ("auto", "cuda", "mps", "cpu"),
    "reward": ("log", "seed"),
    "amp_dtype": ("bfloat16", "float16"),
    "compile_backend": ("inductor", "aot_eager", "eager"),
}
POSITIVE = {"action_repeat", "rollout_steps", "ppo_epochs", "ppo_minibatches", "clip_coef", "num_envs", "episode_steps", "macro_every", "gradient_accumulation_steps", "update_minibatch", "reward_scale",
            "lr_macro", "lr_micro", "grad_clip", "macro_window", "micro_window", "initial_equity", "position_size"}
NON_NEGATIVE = {"purge_bars", "unseen_series", "validation_series", "value_coef", "duration_s", "max_episodes", "total_steps", "commission", "slippage", "entropy_coef", "eval_every_s", "threads", "min_num_envs", "max_nan_updates", "progress_every_s"}
FRACTIONS = {"gamma", "train_fraction", "validation_fraction"}


# Common venue fee levels (regular tier, as published by Binance in 2024-2026): commission and slippage as fractions of
# the notional traded at each change of exposure. Taker orders cross the spread (slippage); maker orders rest in the book.
FEE_LEVELS = {
    "spot-taker": (0.0010, 0.0005),  # spot, market orders: 0.10 % + slippage (the default)
    "spot-bnb": (0.00075, 0.0005),  # spot, fees paid in BNB: 25 % off
    "spot-maker": (0.0010, 0.0),  # spot, limit orders that rest: 0.10 %, no slippage
    "perp-taker": (0.0005, 0.0005),  # USD-M perpetual futures, market orders: 0.05 % + slippage
    "perp-maker": (0.0002, 0.0),  # USD-M perpetual futures, resting limit orders: 0.02 %
    "zero": (0.0, 0.0),  # no costs at all: what the market offers before fees
}


def fee_model(commission: float, slippage: float) -> str:
    """The fee model in words, named after its venue level when it is one: every result header shows it."""
    venue = next((name for name, level in FEE_LEVELS.items() if level == (commission, slippage)), "")
    return (f"fees {100 * commission:.3g}% + slippage {100 * slippage:.3g}% of each trade's notional"
            + (f" ({venue})" if venue else " (custom)"))


def trading_costs(config: RunConfig) -> str:
    """Fees, and what else shapes every trade (shorts, position size): the header of every result."""
    return (fee_model(config.commission, config.slippage) + ("" if config.allow_short else "; long or flat only")
            + (f"; position size {config.position_size:g} of equity" if config.position_size != 1 else ""))


@dataclass
class RunConfig:
    """Everything a training run needs; presets and command-line flags override these defaults."""

    # What and where
    trainer: str = "optimized"  # "original" (one episode at a time) or "optimized" (vectorized)
    data: str = "synthetic"  # file, folder, glob, Binance ZIP, or synthetic[:days=N,seed=S]
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    seed: int = 0  # seeds torch, numpy and the environments; same seed + config on CPU = same results
    out_dir: str = "runs"  # parent folder of run folders
    run_name: str = ""  # run folder name; empty = time stamp + trainer
    preset: str = ""  # the preset this config started from (for the record)
    # When to stop (the first reached wins; 0 = no limit)
    duration_s: float = 60.0  # wall-clock training budget in seconds
    max_episodes: int = 0  # episode budget
    total_steps: int = 0  # env-step budget, as SB3's and CleanRL's total_timesteps (checked after each rollout)
    # Market and environment
    macro_window: int = 492  # bars in the macro (long) feature window, about 41 h of 5-minute bars
    micro_window: int = 60  # bars in the micro (short) feature window, 5 h
    train_fraction: float = 0.70  # first part of the series, for training
    validation_fraction: float = 0.15  # next part, for validation during training; the rest is the test split
    test_windows: str = ""  # explicit test windows "START/END[,START/END...]" (ISO times, UTC) instead of the last part of the data
    train_window: str = ""  # with test_windows: the "START/END" data training and validation use (empty: all of it)
    purge_bars: int = 0  # with test_windows: bars left out on both sides of each test window (0: macro_window + indicator warm-up)
    mirror_train: bool = True  # also train on the train split's mirror image: no net direction, so "always long" earns nothing
    episode_steps: int = 500  # steps per training episode
    position_size: float = 1.0  # fraction of equity per exposure level (1.0 = no leverage)
    allow_short: bool = True  # allow exposure level -1
    commission: float = 0.001  # fee as a fraction of traded notional
    slippage: float = 0.0005  # slippage as a fraction of traded notional
    reward: str = "log"  # "log": log equity growth x reward_scale; "seed": the seed's PnL reward
    reward_scale: float = 100.0  # multiplier of the log reward
    observe_equity: bool = False  # show the agent equity / episode start equity (off: it leaves its range in backtests)
    initial_equity: float = 10_000.0  # starting portfolio value for reports
    # Learning (both algorithms)
    algorithm: str = "ppo"  # optimized trainer: "ppo" or "reinforce"; the original trainer always runs REINFORCE
    gamma: float = 0.99  # discount factor of returns
    lr_macro: float = 3e-4  # Adam learning rate of MacroNet
    lr_micro: float = 3e-4  # Adam learning rate of MicroNet, the decision head and the value head
    macro_every: int = 1  # MacroNet is updated once per this many MicroNet updates (the seed used 10: it starves learning)
    grad_clip: float = 1.0  # gradient norm clip
    anneal_lr: bool = True  # learning rates fall linearly to 0 over the run's duration (or episode budget)
    entropy_coef: float = 0.03  # entropy bonus weight (keeps exploring; 0.01 left one seed in six flat, docs/learning.md)
    max_nan_updates: int = 5  # stop after this many non-finite updates in a row (0 = never)
    # PPO (optimized trainer, algorithm = "ppo")
    rollout_steps: int = 64  # steps per rollout of the persistent episodes (then the updates)
    ppo_epochs: int = 4  # passes over each rollout
    ppo_minibatches: int = 4  # minibatches per pass (each one optimizer step)
    clip_coef: float = 0.2  # PPO's clip of the probability ratio
    gae_lambda: float = 0.95  # GAE's lambda
    value_coef: float = 0.5  # weight of the value loss
    action_repeat: int = 4  # bars each sampled action decides in training (it trades at the first, HOLDs the rest; gamma is per decision); backtests decide every bar
    # Optimized trainer
    num_envs: int = 128  # parallel episodes
    min_num_envs: int = 8  # floor when out-of-memory halves num_envs
    gradient_accumulation_steps: int = 1  # rollouts accumulated per optimizer step (effective batch = num_envs x this)
    update_minibatch: int = 16_384  # samples per forward/backward chunk of the update (bounds memory)
    use_amp: bool = False  # autocast: bfloat16 where supported; float16 + gradient scaler on CUDA if amp_dtype says so
    amp_dtype: str = "bfloat16"  # "bfloat16" or "float16" (CUDA only)
    compile_model: bool = False  # torch.compile the policy (falls back to eager, reported, on failure)
    compile_backend: str = "inductor"  # torch.compile backend
    cuda_graphs: bool = False  # capture the whole rollout as one CUDA graph (CUDA only)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    # Reporting
    eval_every_s: float = 20.0  # seconds between validation backtests during training (0 = only at the end)
    select_best: bool = True  # keep the latest weights within noise of the best validation score if they show an edge, else hold flat (never looks at test)
    validation_series: int = 4  # synthetic data: independent validation series (and mirrors) beside the validation split
    unseen_series: int = 4  # fresh synthetic series the final model is also judged on (0 = none)
    progress_every_s: float = 0.25  # minimum seconds between progress events
    tensorboard: bool = False  # also write TensorBoard event files to <run>/tensorboard (.venv/bin/pip install -e ".[tensorboard]")

    def env_config(self) -> EnvConfig:
        """The market rules: every EnvConfig field, taken by name from this config."""
        return EnvConfig(**{f.name: getattr(self, f.name) for f in fields(EnvConfig)})

    @property
    def learning_algorithm(self) -> str:
        return "reinforce" if self.trainer == "original" else self.algorithm

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> RunConfig:
        return apply_overrides(self, changes, origin="override")


def config_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(RunConfig)}


def field_docs() -> dict[str, str]:
    """One-line docs of each field, read from this file's comments (shown by `presets show`)."""
    source = Path(__file__).read_text()
    return dict(re.findall(r"^    (\w+): [^=]+= .*?  # (.*)$", source, flags=re.M))


def _coerce(key: str, value: Any, origin: str) -> Any:
    expected = config_fields()[key].type
    try:
        if expected == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if expected == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if expected == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {key} must be {'true or false' if expected == 'bool' else 'an integer' if expected == 'int' else 'a number' if expected == 'float' else 'text'}, got {value!r}") from None


def validate(config: RunConfig, origin: str = "config") -> RunConfig:
    for key, value in config.to_dict().items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{origin}: {key} must be a finite number, got {value}")
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"{origin}: {key} = {value!r} is not accepted; choose one of {', '.join(CHOICES[key])}")
        if key in POSITIVE and not value > 0:
            raise ConfigError(f"{origin}: {key} must be > 0, got {value}")
        if key in NON_NEGATIVE and value < 0:
            raise ConfigError(f"{origin}: {key} must be >= 0, got {value}")
        if key in FRACTIONS and not 0 < value < 1:
            raise ConfigError(f"{origin}: {key} must be between 0 and 1, got {value}")
    if not config.data.strip():
        raise ConfigError(f"{origin}: data must name a source (a file, folder, glob or synthetic), got an empty value")
    if config.run_name and (Path(config.run_name).name != config.run_name or config.run_name in (".", "..")):
        raise ConfigError(f"{origin}: run_name {config.run_name!r} must be a plain folder name (no '/', '..' or absolute path)")
    if not 0 < config.gae_lambda <= 1:
        raise ConfigError(f"{origin}: gae_lambda must be in (0, 1], got {config.gae_lambda}")
    test_windows = parse_windows(config.test_windows, "test_windows", origin)
    for (_, end), (start, _) in zip(test_windows, test_windows[1:]):
        if end is None or start is None or start < end:
            raise ConfigError(f"{origin}: test_windows must be in time order without overlaps ({config.test_windows})")
    if config.train_window and not test_windows:
        raise ConfigError(f"{origin}: train_window needs test_windows (without them the splits are by fractions)")
    if config.train_window and len(parse_windows(config.train_window, "train_window", origin)) != 1:
        raise ConfigError(f"{origin}: train_window is one START/END pair, got {config.train_window!r}")
    if config.train_fraction + config.validation_fraction >= 1:
        raise ConfigError(f"{origin}: train_fraction + validation_fraction must leave a test split (< 1)")
    if config.micro_window > config.macro_window or config.micro_window < 2:
        raise ConfigError(f"{origin}: micro_window must be between 2 and macro_window ({config.macro_window})")
    if config.position_size > 1:
        raise ConfigError(f"{origin}: position_size must be <= 1 (no leverage), got {config.position_size}")
    if config.learning_algorithm == "ppo" and config.num_envs * config.rollout_steps // config.ppo_minibatches < 2:
        raise ConfigError(f"{origin}: ppo_minibatches ({config.ppo_minibatches}) leaves fewer than 2 samples per minibatch: a rollout holds "
                          f"num_envs x rollout_steps = {config.num_envs * config.rollout_steps}; use at most "
                          f"{max(1, config.num_envs * config.rollout_steps // 2)}")
    if config.trainer == "optimized" and config.min_num_envs > config.num_envs:
        raise ConfigError(f"{origin}: min_num_envs ({config.min_num_envs}) must be <= num_envs ({config.num_envs})")
    return config


def apply_overrides(config: RunConfig, overrides: dict[str, Any], origin: str) -> RunConfig:
    known = config_fields()
    unknown = [k for k in overrides if k not in known]
    if unknown:
        raise ConfigError(f"{origin}: unknown key {unknown[0]!r}; accepted keys: {', '.join(known)}")
    changes = {k: _coerce(k, v, origin) for k, v in overrides.items()}
    return validate(dataclasses.replace(config, **changes), origin)


# --- presets ---------------------------------------------------------------------------------------

def user_presets_dir() -> Path:
    base = os.environ.get("ASYM_TUI_CONFIG_DIR") or Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "asym-tui"
    return Path(base) / "presets"


def preset_paths() -> dict[str, Path]:
    """Built-in presets, then user presets (a user preset with the same name wins)."""
    found: dict[str, Path] = {}
    for folder in (PRESETS_DIR, user_presets_dir()):
        if folder.is_dir():
            found.update({p.stem: p for p in sorted(folder.glob("*.toml"))})
    return found


def read_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
        paths = preset_paths()
        if name_or_path not in paths:
            raise ConfigError(f"unknown preset {name_or_path!r}; available: {', '.join(paths)}")
        path = paths[name_or_path]
    values = _read_toml(path)
    values.pop("description", None)
    apply_overrides(RunConfig(), values, f"preset {path}")  # reject unknown keys and bad values now
    return values


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"preset {path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"preset {path}: not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"preset {path}: not valid TOML ({exc})") from exc


def preset_description(name: str) -> str:
    return str(_read_toml(preset_paths()[name]).get("description", ""))


def load_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the preset, then explicit overrides; validated at each step."""
    config = RunConfig()
    if preset:
        config = apply_overrides(config, read_preset(preset), f"preset {preset}")
        config.preset = Path(preset).stem
    return apply_overrides(config, overrides or {}, "override")


def save_user_preset(name: str, config: RunConfig, description: str = "") -> Path:
    """Save the fields that differ from the defaults as a user preset."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"preset name {name!r}: use letters, digits, '-', '_' or '.'")
    defaults = RunConfig().to_dict()
    values = {k: v for k, v in config.to_dict().items() if v != defaults[k] and k not in ("preset", "run_name")}
    if description:
        values = {"description": description, **values}
    folder = user_presets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(values))
    return path


def parse_duration(text: str) -> float:
    """'30s', '2m', '1.5h', '1h30m', '90' (seconds) → seconds; pandas.Timedelta reads the units."""
    import warnings

    import pandas as pd

    value = str(text).strip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas' deprecation notes on unit spellings are not the user's concern
            seconds = float(value) if re.fullmatch(r"\d+(\.\d+)?", value) else pd.Timedelta(value).total_seconds()
    except (ValueError, TypeError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigError(f"duration {text!r}: use a number of seconds or a value like 30s, 2m, 1h30m")
    return seconds
