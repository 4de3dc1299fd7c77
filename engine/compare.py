"""Original vs optimized: both trainers on the same data, seed and wall time, and the seed's comparison
table from their two summaries (the speedup row included; the UIs only format it, in asym_tui.tables)."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from engine.config import RunConfig
from engine.events import RunSummary
from engine.runs import RunOutcome, execute_run, prepare_data


@dataclass
class ComparisonRow:
    metric: str
    original: float | None
    optimized: float | None
    better: str  # "higher" or "lower": which direction wins
    unit: str = ""  # "$", "%" (already a percentage), "fraction" (shown as a percentage), "MB", "s", "×", "count" or "" (a number)

    @property
    def winner(self) -> str:
        if self.original is None or self.optimized is None or self.original == self.optimized:
            return "—"
        higher_wins = self.better == "higher"
        return "optimized" if (self.optimized > self.original) == higher_wins else "original"


def comparison_rows(original: RunSummary, optimized: RunSummary) -> list[ComparisonRow]:
    """The seed's table: episodes/min, speedup, device use, memory, final portfolio, Sharpe, drawdown, learning."""
    both = lambda *path: (original.value(*path), optimized.value(*path))
    ratio = speedup(original, optimized)
    return [
        ComparisonRow("episodes/min", *both("throughput", "episodes_per_min"), "higher"),
        ComparisonRow("speedup (episodes/min)", 1.0 if ratio is not None else None, ratio, "higher", "×"),
        ComparisonRow("env-steps/s", *both("throughput", "steps_per_s"), "higher"),
        ComparisonRow("optimizer steps/s", *both("throughput", "optimizer_steps_per_s"), "higher"),
        ComparisonRow("optimizer steps", *both("throughput", "optimizer_steps"), "higher", "count"),
        ComparisonRow("episodes", *both("throughput", "episodes"), "higher", "count"),
        ComparisonRow("warm-up", *both("throughput", "warmup_s"), "lower", "s"),
        ComparisonRow(f"{optimized.device_label} use", *both("resources", "utilisation_mean"), "higher", "%"),
        ComparisonRow("peak memory", *both("resources", "peak_memory_mb"), "lower", "MB"),
        ComparisonRow("final portfolio (test)", *both("final_portfolio"), "higher", "$"),
        ComparisonRow("Sharpe (test)", *both("test", "agent", "sharpe"), "higher"),
        ComparisonRow("max drawdown (test)", *both("test", "agent", "max_drawdown"), "higher", "fraction"),
        ComparisonRow("Sharpe (validation)", *both("validation", "agent", "sharpe"), "higher"),
        ComparisonRow("Sharpe (unseen series)", *both("learning", "unseen", "agent_sharpe"), "higher"),
        ComparisonRow("trailing rule (unseen)", *both("learning", "unseen", "trailing_rule_sharpe"), "higher"),
        ComparisonRow("time to quality", *both("learning", "time_to_quality_s"), "lower", "s"),
    ]


def speedup(original: RunSummary, optimized: RunSummary) -> float | None:
    before, after = original.throughput.episodes_per_min, optimized.throughput.episodes_per_min
    return after / before if before and after is not None else None


def run_comparison(config: RunConfig, on_event=None, stop: threading.Event | None = None) -> tuple[RunOutcome, RunOutcome | None]:
    """Original, then optimized, on the same data, seed and duration (the data is loaded once)."""
    splits = prepare_data(config)
    original = execute_run(dataclasses.replace(config, trainer="original"), on_event, stop, splits=splits)
    if stop is not None and stop.is_set():
        return original, None
    optimized = execute_run(dataclasses.replace(config, trainer="optimized"), on_event, stop, splits=splits)
    return original, optimized


def by_trainer(first: RunSummary, second: RunSummary) -> tuple[RunSummary, RunSummary]:
    """Two summaries as (original, optimized) whatever order they were given in."""
    if first.trainer == "optimized" and second.trainer == "original":
        return second, first
    return first, second
