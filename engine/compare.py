"""Original vs optimized: the seed's comparison table, from two run summaries."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.config import RunConfig
from engine.runs import RunError, RunOutcome, execute_run, prepare_data, read_json


@dataclass
class ComparisonRow:
    metric: str
    original: float | None
    optimized: float | None
    better: str  # "higher" or "lower": which direction wins
    unit: str = ""  # "$", "%" (already a percentage), "fraction" (shown as a percentage), "MB", "s", or "" (a number)

    def format(self, value: float | None) -> str:
        """The table cell for one of the two values."""
        if value is None or value != value:
            return "N/A"
        if self.unit == "fraction":
            return f"{100 * value:.2f}%"
        return {"$": f"${value:,.2f}", "%": f"{value:,.1f}%", "MB": f"{value:,.0f} MB", "s": f"{value:,.0f} s"}.get(self.unit, f"{value:,.2f}")

    @property
    def winner(self) -> str:
        if self.original is None or self.optimized is None or self.original == self.optimized:
            return "—"
        higher_wins = self.better == "higher"
        return "optimized" if (self.optimized > self.original) == higher_wins else "original"


def comparison_rows(original: dict, optimized: dict) -> list[ComparisonRow]:
    """The seed's table: episodes/min, speedup, GPU (or CPU) use, memory, final portfolio, Sharpe, drawdown."""
    def get(summary: dict, *keys):
        value = summary
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    both = lambda *keys: (get(original, *keys), get(optimized, *keys))
    rows = [
        ComparisonRow("episodes/min", *both("throughput", "episodes_per_min"), "higher"),
        ComparisonRow("env-steps/s", *both("throughput", "steps_per_s"), "higher"),
        ComparisonRow("optimizer steps/s", *both("throughput", "optimizer_steps_per_s"), "higher"),
        ComparisonRow("optimizer steps", *both("throughput", "optimizer_steps"), "higher"),
        ComparisonRow("episodes", *both("throughput", "episodes"), "higher"),
        ComparisonRow(f"{optimized.get('device_label', 'GPU')} use", *both("resources", "utilisation_mean"), "higher", "%"),
        ComparisonRow("peak memory", *both("resources", "peak_memory_mb"), "lower", "MB"),
        ComparisonRow("final portfolio (test)", *both("final_portfolio"), "higher", "$"),
        ComparisonRow("Sharpe (test)", *both("test", "agent", "sharpe"), "higher"),
        ComparisonRow("max drawdown (test)", *both("test", "agent", "max_drawdown"), "higher", "fraction"),
        ComparisonRow("Sharpe (validation)", *both("validation", "agent", "sharpe"), "higher"),
        ComparisonRow("Sharpe (unseen series)", *both("learning", "unseen", "agent_sharpe"), "higher"),
        ComparisonRow("trailing rule (unseen)", *both("learning", "unseen", "trailing_rule_sharpe"), "higher"),
        ComparisonRow("time to quality", *both("learning", "time_to_quality_s"), "lower", "s"),
    ]
    return rows


def speedup(original: dict, optimized: dict) -> float | None:
    before = original.get("throughput", {}).get("episodes_per_min")
    after = optimized.get("throughput", {}).get("episodes_per_min")
    return after / before if before and after is not None else None


def run_comparison(config: RunConfig, on_event=None, stop: threading.Event | None = None) -> tuple[RunOutcome, RunOutcome | None]:
    """Original, then optimized, on the same data, seed and duration (the data is loaded once)."""
    splits = prepare_data(config)
    original = execute_run(dataclasses.replace(config, trainer="original"), on_event, stop, splits=splits)
    if stop is not None and stop.is_set():
        return original, None
    optimized = execute_run(dataclasses.replace(config, trainer="optimized"), on_event, stop, splits=splits)
    return original, optimized


def read_summary(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: no summary.json (not a finished run folder)")
    summary = read_json(path)
    if not isinstance(summary.get("throughput"), dict):
        raise RunError(f"{path}: not a run summary (no throughput figures)")
    return summary


def by_trainer(first: dict, second: dict) -> tuple[dict, dict]:
    """Two summaries as (original, optimized) whatever order they were given in."""
    if first.get("trainer") == "optimized" and second.get("trainer") == "original":
        return second, first
    return first, second
