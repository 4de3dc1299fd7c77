"""Comparisons: two trainers (or any two runs) on the same data, seed(s) and wall time, with the seed's
table (throughput, resources, backtests, learning) and the verdict's uncertainty.

One run per side is an anecdote: `run_comparison(config, seeds=N)` trains N seeds of each trainer
(alternating, so a change in the machine's load hits both) through the sweep executor (local processes
or Ray) into one comparison folder. The verdict (engine/stats.py) is on the Sharpe of each run's chosen
model on fresh series it never saw (a matrix of seeds x series; the test split on data from files):
per-seed values, mean, IQM and a 95 % stratified-bootstrap interval per side, time-to-quality, and the
probability of improvement P(right > left) with its interval. A side whose run did not get its share of
the budget (stopped, failed, most of it spent warming up) is flagged, and no row names a winner then.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.config import RunConfig
from engine.events import RunSummary
from engine.runs import atomic_write_json, check_output_dir, read_summary
from engine.stats import aggregate, improvement_interval, probability_of_improvement
from engine.sweep import Trial, execute_trials

TRAINERS = ("original", "optimized")
MAX_WARMUP_SHARE = 0.5  # a run that spent more of its time budget than this warming up did not get its share
MAX_OVERRUN = 1.25  # nor did one that ran this much longer than its budget


@dataclass
class Side:
    """One column of a comparison: one or more runs (seeds) of the same kind."""

    label: str
    summaries: list[RunSummary]

    def value(self, *path: str) -> float | None:
        """The mean over this side's runs of a figure by its path, or None where no run has it."""
        values = [v for s in self.summaries if isinstance(v := s.value(*path), (int, float)) and not isinstance(v, bool)]
        return float(np.mean(values)) if values else None

    def shortfalls(self) -> list[str]:
        return [f"{self.label} seed {s.seed}: {reason}" for s in self.summaries if (reason := shortfall(s))]


def describe(summary: RunSummary) -> str:
    """What a run is, for a column title: trainer and algorithm (the original always runs REINFORCE)."""
    return summary.trainer if summary.trainer == "original" else f"{summary.trainer} ({summary.algorithm or '?'})"


def shortfall(summary: RunSummary) -> str:
    """Why a run did not get its fair share of the budget, or ''."""
    throughput = summary.throughput
    budget = throughput.duration_s
    if summary.status != "completed":
        return f"{summary.status} ({summary.stop_reason})"
    if budget and throughput.warmup_s > MAX_WARMUP_SHARE * budget:
        return f"warm-up took {throughput.warmup_s:.0f} s of its {budget:.0f} s"
    if budget and throughput.elapsed_s > MAX_OVERRUN * budget + 5:
        return f"ran {throughput.elapsed_s:.0f} s on a {budget:.0f} s budget"
    return ""


@dataclass
class ComparisonRow:
    metric: str
    left: float | None
    right: float | None
    better: str  # "higher" or "lower": which direction wins
    unit: str = ""  # "$", "%" (already a percentage), "fraction" (shown as a percentage), "MB", "s", "×", "count" or "" (a number)

    def winner(self, labels: tuple[str, str]) -> str:
        if self.left is None or self.right is None or self.left == self.right:
            return "—"
        return labels[1] if (self.right > self.left) == (self.better == "higher") else labels[0]


@dataclass
class Comparison:
    """Two sides, their table, and the verdict with its uncertainty."""

    left: Side
    right: Side
    folder: Path | None = None

    @property
    def labels(self) -> tuple[str, str]:
        return self.left.label, self.right.label

    @property
    def warnings(self) -> list[str]:
        notes = [f"{note} — no winner is named" for note in self.left.shortfalls() + self.right.shortfalls()]
        if any(a is b or (a.data, a.seed, a.trainer, a.algorithm, a.throughput.elapsed_s) == (b.data, b.seed, b.trainer, b.algorithm, b.throughput.elapsed_s)
               for a in self.left.summaries for b in self.right.summaries):
            notes.append("the two sides hold the same run: nothing is being compared")
        return notes

    def winner(self, row: ComparisonRow) -> str:
        return "—" if self.warnings else row.winner(self.labels)

    def rows(self) -> list[ComparisonRow]:
        return comparison_rows(self.left, self.right)

    def verdict(self) -> dict:
        return verdict(self.left, self.right)

    def to_json(self) -> dict:
        return {"labels": list(self.labels), "folder": str(self.folder) if self.folder else None, "warnings": self.warnings,
                "rows": [{"metric": r.metric, "left": r.left, "right": r.right, "winner": self.winner(r)} for r in self.rows()],
                "speedup": speedup(self.left, self.right), "verdict": self.verdict(),
                "validations": {side.label: [s.learning.validations for s in side.summaries] for side in (self.left, self.right)}}


def comparison_rows(left: Side, right: Side) -> list[ComparisonRow]:
    """The seed's table: episodes/min, speedup, device use, memory, final portfolio, Sharpe, drawdown, learning
    (each figure the mean over a side's seeds)."""
    both = lambda *path: (left.value(*path), right.value(*path))
    ratio = speedup(left, right)
    device = (right.summaries or left.summaries)[0].device_label
    return [
        ComparisonRow("episodes/min", *both("throughput", "episodes_per_min"), "higher"),
        ComparisonRow("speedup (episodes/min)", 1.0 if ratio is not None else None, ratio, "higher", "×"),
        ComparisonRow("env-steps/s", *both("throughput", "steps_per_s"), "higher"),
        ComparisonRow("optimizer steps/s", *both("throughput", "optimizer_steps_per_s"), "higher"),
        ComparisonRow("optimizer steps", *both("throughput", "optimizer_steps"), "higher", "count"),
        ComparisonRow("episodes", *both("throughput", "episodes"), "higher", "count"),
        ComparisonRow("wall time", *both("throughput", "elapsed_s"), "lower", "s"),
        ComparisonRow("warm-up", *both("throughput", "warmup_s"), "lower", "s"),
        ComparisonRow(f"{device} use", *both("resources", "utilisation_mean"), "higher", "%"),
        ComparisonRow("peak memory", *both("resources", "peak_memory_mb"), "lower", "MB"),
        ComparisonRow("final portfolio (test)", *both("final_portfolio"), "higher", "$"),
        ComparisonRow("Sharpe (test)", *both("test", "agent", "sharpe"), "higher"),
        ComparisonRow("max drawdown (test)", *both("test", "agent", "max_drawdown"), "higher", "fraction"),
        ComparisonRow("Sharpe (validation)", *both("validation", "agent", "sharpe"), "higher"),
        ComparisonRow("Sharpe (unseen series)", *both("learning", "unseen", "agent_sharpe"), "higher"),
        ComparisonRow("trailing rule (unseen)", *both("learning", "unseen", "trailing_rule_sharpe"), "higher"),
        ComparisonRow("time to quality", *both("learning", "time_to_quality_s"), "lower", "s"),
    ]


def speedup(left: Side, right: Side) -> float | None:
    before, after = left.value("throughput", "episodes_per_min"), right.value("throughput", "episodes_per_min")
    return after / before if before and after is not None else None


def verdict_scores(summary: RunSummary) -> tuple[str, list[float]]:
    """What a run is judged on: its chosen model's Sharpe on each fresh series, else on the test split."""
    if summary.unseen and summary.unseen.get("series"):
        return "Sharpe on unseen series", [series["agent"]["sharpe"] for series in summary.unseen["series"]]
    return "Sharpe on the test split", [summary.value("test", "agent", "sharpe") or 0.0]


def verdict(left: Side, right: Side) -> dict:
    """Per side: per-seed scores, mean, IQM, interval, worst, time-to-quality; and P(right > left)."""
    measures = {verdict_scores(s)[0] for side in (left, right) for s in side.summaries}
    matrices = [np.array([verdict_scores(s)[1] for s in side.summaries]) for side in (left, right)]
    comparable = len(measures) == 1 and matrices[0].shape[1:] == matrices[1].shape[1:]
    sides = {}
    for side, matrix in zip((left, right), matrices):
        sides[side.label] = {**aggregate(matrix).to_json(), "seeds": [s.seed for s in side.summaries],
                             "time_to_quality_s": [s.learning.time_to_quality_s for s in side.summaries],
                             "no_edge": [bool((s.selected_model or {}).get("no_edge")) for s in side.summaries]}
    result = {"measure": measures.pop() if comparable else "mixed", "sides": sides}
    if comparable:
        result["probability_of_improvement"] = {"value": probability_of_improvement(matrices[1], matrices[0]),
                                                "interval": list(improvement_interval(matrices[1], matrices[0])),
                                                "of": f"{right.label} > {left.label}"}
    return result


def comparison_of(first: list[RunSummary], second: list[RunSummary], folder: Path | None = None) -> Comparison:
    """Two groups of runs as a comparison, original on the left when the trainers differ."""
    if first and second and first[0].trainer == "optimized" and second[0].trainer == "original":
        first, second = second, first
    labels = [describe(group[0]) if group else "?" for group in (first, second)]
    if labels[0] == labels[1]:
        labels = [f"{label} [{side}]" for label, side in zip(labels, ("A", "B"))]
    return Comparison(Side(labels[0], first), Side(labels[1], second), folder)


def comparison_trials(seeds: list[int]) -> list[Trial]:
    """Both trainers for every seed, alternating, so the machine's load drifts over both alike."""
    return [Trial(f"{trainer}-seed{seed}", {"trainer": trainer}, seed) for seed in seeds for trainer in TRAINERS]


def new_comparison_dir(out_dir: str) -> Path:
    folder = check_output_dir(out_dir) / datetime.now(timezone.utc).strftime("compare-%Y%m%d-%H%M%S")
    suffix = 2
    while folder.exists():
        folder, suffix = folder.with_name(f"{folder.name.split('~')[0]}~{suffix}"), suffix + 1
    folder.mkdir(parents=True)
    return folder


def run_comparison(config: RunConfig, seeds: int = 1, on_event=None, stop: threading.Event | None = None, ray: str | None = None,
                   cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, on_row=None) -> Comparison:
    """Original and optimized, `seeds` seeds each from `config.seed`, same data and wall time; one folder."""
    folder = new_comparison_dir(config.out_dir)
    trials = comparison_trials(list(range(config.seed, config.seed + seeds)))
    execute_trials(config, trials, folder, stop=stop, on_event=on_event, on_row=on_row, ray=ray,
                   cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial)
    finished = {trial.name: read_summary(folder / trial.name) for trial in trials if (folder / trial.name / "summary.json").is_file()}
    groups = [[finished[t.name] for t in trials if t.params["trainer"] == trainer and t.name in finished] for trainer in TRAINERS]
    comparison = comparison_of(*groups, folder=folder)
    atomic_write_json(folder / "compare.json", comparison.to_json())
    return comparison
