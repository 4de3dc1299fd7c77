"""The contract between the engine and whatever shows it: events while a run trains, the summary after.

A trainer emits `Progress` (a throttled snapshot) and `LogMessage` (a note for the user) through a
callback; `runs` writes a `RunSummary` to summary.json when the run ends. The app, the command line,
`compare` and `sweep` read only these types; `RunSummary.from_json` reads old and new summaries alike.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

@dataclass
class LogMessage:
    """A warning or note for the user (compile fallback, OOM halving, skipped update)."""

    level: str  # "info", "warning" or "error"
    text: str
    elapsed_s: float = 0.0


@dataclass
class Progress:
    """A throttled snapshot of training, emitted a few times a second."""

    trainer: str
    phase: str  # "starting", "compiling", "warming up", "training" or "validating"
    elapsed_s: float = 0.0
    train_s: float = 0.0  # seconds spent in rollouts and updates after warm-up (throughput uses this)
    warmup_s: float = 0.0  # seconds of the first iterations (compilation, graph capture), kept out of throughput
    duration_s: float = 0.0  # the run's time budget (0: none)
    max_episodes: int = 0  # the run's episode budget (0: none)
    total_steps: int = 0  # the run's env-step budget (0: none)
    episodes: int = 0
    env_steps: int = 0
    episodes_per_min: float = 0.0
    steps_per_s: float = 0.0
    loss: float = math.nan
    mean_reward: float = math.nan
    mean_episode_return: float = math.nan  # fraction, over the latest rollout's episodes
    train_sharpe: float = math.nan  # annualized, over recent episodes
    portfolio: float = math.nan  # initial equity x mean final equity of the latest episodes
    macro_updates: int = 0
    micro_updates: int = 0
    optimizer_steps_per_s: float = 0.0  # optimizer steps (micro updates) per second of training
    algorithm: str = ""
    num_envs: int = 1
    rollout_s: float = 0.0
    update_s: float = 0.0
    device_label: str = "CPU"
    utilisation: float | None = None  # the accelerator's use, or this process's CPU use (% of all cores)
    memory_used_mb: float | None = None  # this process: GPU memory on a GPU, resident memory on a CPU
    memory_total_mb: float | None = None
    peak_memory_mb: float | None = None
    process_cpu: float | None = None  # this process's CPU use, % of all cores
    process_rss_mb: float | None = None  # this process's resident memory
    val_sharpe: float | None = None
    val_score: float | None = None  # mean Sharpe on validation and its mirror image: what selects the model
    val_return: float | None = None
    val_drawdown: float | None = None
    val_portfolio: float | None = None
    nan_skips: int = 0
    scaler_skips: int = 0
    # Diagnostics of the latest update (engine/learners.py; NaN where the algorithm has none): PPO's are means
    # over the update's minibatch steps, explained variance is the rollout's values against their GAE targets.
    approx_kl: float = math.nan  # mean((ratio - 1) - log ratio), CleanRL's estimator
    clip_fraction: float = math.nan  # share of samples whose probability ratio left 1 +/- clip_coef
    entropy: float = math.nan  # of the action distribution, nats (at most ln 3)
    policy_loss: float = math.nan
    value_loss: float = math.nan  # 0.5 x mean squared error against the GAE targets
    explained_variance: float = math.nan  # 1 - Var(target - value) / Var(target)
    learning_rate: float = math.nan  # lr_micro after annealing (lr_macro follows the same schedule)

    def row(self) -> dict:
        return asdict(self)

    @property
    def done_fraction(self) -> float | None:
        """How much of the budget that ends first is spent (0–1): time, episodes or env-steps; None without a budget."""
        spent = [done / budget for done, budget in ((self.elapsed_s, self.duration_s), (self.episodes, self.max_episodes),
                                                    (self.env_steps, self.total_steps)) if budget]
        return min(1.0, max(spent)) if spent else None


Event = Progress | LogMessage


@dataclass
class Throughput:
    episodes: int = 0
    env_steps: int = 0
    elapsed_s: float = 0.0
    train_s: float = 0.0
    warmup_s: float = 0.0
    duration_s: float = 0.0  # the run's time budget (0: none)
    episodes_per_min: float | None = None
    steps_per_s: float | None = None
    optimizer_steps: int | None = None
    optimizer_steps_per_s: float | None = None
    rollout_s: float = 0.0
    update_s: float = 0.0


@dataclass
class Resources:
    utilisation_mean: float | None = None  # the device's use during training (CPU: this process's, % of all cores)
    peak_memory_mb: float | None = None  # GPU: peak allocated by torch; CPU: peak resident memory of the process


@dataclass
class Learning:
    """What the run learned: validation score against time, and the chosen model on series it never saw."""

    rule_val_score: float | None = None
    quality_target: float | None = None
    time_to_quality_s: float | None = None
    validations: list[dict] = field(default_factory=list)  # elapsed_s, env_steps, optimizer_steps, val_sharpe, val_score
    unseen: dict | None = None
    validation_series: list[str] = field(default_factory=list)  # what the score is the mean Sharpe over
    validation_baselines: dict = field(default_factory=dict)  # flat, long, short and the trailing rule, scored the same way
    validation_noise: float | None = None  # standard error of the score


@dataclass
class RunSummary:
    """summary.json: the run's status, throughput, resources, backtests and learning record."""

    status: str = "unknown"  # "completed", "stopped", "failed"
    stop_reason: str = ""
    trainer: str = "?"
    preset: str = ""
    algorithm: str = ""
    data: str = ""
    seed: int | None = None
    device: str = "?"
    device_label: str = "CPU"
    fee_model: str = ""  # the costs every backtest and reward paid, in words (engine.config.fee_model)
    throughput: Throughput = field(default_factory=Throughput)
    training: dict = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    metric_conventions: dict = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    validation: dict[str, dict] = field(default_factory=dict)  # policy -> metrics, greedy backtests
    test: dict[str, dict] = field(default_factory=dict)
    test_by_series: dict[str, dict] = field(default_factory=dict)  # symbol -> policy -> metrics, where the data holds several
    final_portfolio: float | None = None
    selected_model: dict | None = None
    learning: Learning = field(default_factory=Learning)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> RunSummary:
        """A summary from its JSON object; missing keys take their defaults, unknown keys are ignored.

        Raises TypeError or ValueError when a part has the wrong shape."""
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, found {type(value).__name__}")
        nested = {"throughput": Throughput, "resources": Resources, "learning": Learning}
        known = {f.name for f in dataclasses.fields(cls)}
        fields: dict[str, Any] = {}
        for key, item in value.items():
            if key not in known:
                continue
            if key in nested:
                item = _part(nested[key], item or {}, key)
            fields[key] = item
        return cls(**fields)

    def test_metric(self, policy: str, name: str) -> float | None:
        return (self.test.get(policy) or {}).get(name)

    @property
    def unseen(self) -> dict | None:
        return self.learning.unseen or None

    def value(self, *path: str):
        """A figure by its path in the JSON object (("test", "agent", "sharpe")), or None."""
        item: Any = self
        for key in path:
            item = item.get(key) if isinstance(item, dict) else getattr(item, key, None)
        return item


def _part(kind: type, value: dict, key: str):
    if not isinstance(value, dict):
        raise TypeError(f"{key}: expected an object, found {type(value).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{name: item for name, item in value.items() if name in names})
