"""Headless output of the command line: the console, the progress bar, a finished run and a comparison.

Tables come from asym_tui.tables, as in the app; this module only decides what is printed where."""

from __future__ import annotations

import json
from dataclasses import asdict
import os
import sys
from contextlib import contextmanager
from typing import Callable

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Column
from rich.text import Text

from asym_tui.tables import (comparison_table, improvement_text, metrics_table, number, series_table, stage_text, timing_text,
                             verdict_table)
from engine.compare import Comparison
from engine.events import LogMessage, Progress, RunSummary


def make_console(stderr: bool = False) -> Console:
    """A console for results: the terminal's width, or a wide one when piped (tables are never cut to 80)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() or os.environ.get("COLUMNS") else 200)


def print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def progress_status(event: Progress, width: int | None = None) -> str:
    """One line of what a run is doing: phase, time used and left, learning, throughput; within `width` the
    last fields are dropped whole, so no number is ever cut."""
    fields = [event.phase, timing_text(event.elapsed_s, event.duration_s)]
    if event.phase not in ("compiling", "warming up", "starting"):
        fields += [*([f"val score {event.val_score:.2f}"] if event.val_score is not None else []), f"train Sharpe {event.train_sharpe:.2f}",
                   f"{event.episodes:,} eps", f"{event.steps_per_s:,.0f} steps/s", f"{event.optimizer_steps_per_s:,.1f} updates/s"]
    while width is not None and len(fields) > 1 and len(" · ".join(fields)) > width:
        fields.pop()
    return " · ".join(fields)


def json_line(event: Progress | LogMessage) -> str:
    """An event as one line of strict JSON: {"event": "progress" or "log", ...its fields}, NaN as null."""
    fields = {key: None if isinstance(value, float) and not np.isfinite(value) else value for key, value in asdict(event).items()}
    return json.dumps({"event": "progress" if isinstance(event, Progress) else "log", **fields})


def log_printer(console: Console) -> Callable[[LogMessage], None]:
    """Prints each message once: a study's runs load the same data and would repeat the same warning per run."""
    said: set[str] = set()

    def say(event: LogMessage) -> None:
        if event.text not in said:
            said.add(event.text)
            console.print(f"[yellow]{event.level}:[/] {escape(event.text)}", highlight=False)
    return say


@contextmanager
def progress_display(console: Console, quiet: bool, trainers: list[str], json_lines: bool = False):
    """A rich progress bar per run (time-based, or episode-based with a budget), or with `json_lines` one JSON
    line per event on stderr (stdout stays for the result); yields the event callback."""
    from rich.progress import BarColumn, Progress as Bar, TextColumn

    if json_lines:
        yield lambda event: None if quiet and isinstance(event, Progress) else print(json_line(event), file=sys.stderr, flush=True)
        return
    if quiet:
        say = log_printer(console)
        yield lambda event: say(event) if isinstance(event, LogMessage) else None
        return
    stage_width = max(len(stage_text(name, trainers)) for name in trainers)
    bar = Bar(TextColumn("[bold]{task.fields[stage]}", table_column=Column(no_wrap=True, min_width=stage_width)),
              BarColumn(bar_width=10), TextColumn("{task.percentage:>3.0f}%"),
              TextColumn("{task.fields[status]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
              console=console, refresh_per_second=4, transient=True)  # gone at the end: the summary says how it ended
    status_width = console.width - stage_width - 10 - 4 - 3  # beside the stage, bar, percentage and the gaps between them
    tasks: dict[str, int] = {}
    say = log_printer(bar.console)
    # Until the first trainer reports, the data is being loaded and featurized (seconds, for years of candles).
    preparing: int | None = bar.add_task("", total=100, stage="data", status="loading and featurizing the data…")

    def on_event(event) -> None:
        nonlocal preparing
        if isinstance(event, LogMessage):
            say(event)
            return
        if preparing is not None:
            bar.remove_task(preparing)
            preparing = None
        if event.trainer not in tasks:
            tasks[event.trainer] = bar.add_task("", total=100, stage=stage_text(event.trainer, trainers), status="")
        done = event.done_fraction
        bar.update(tasks[event.trainer], completed=100 * (done or 0.0), status=progress_status(event, status_width))

    with bar:
        yield on_event


def headline(outcome) -> dict:
    """What a script wants from a finished run: where it is and its figures (the rest is in summary.json)."""
    summary: RunSummary = outcome.summary
    unseen = {key: value for key, value in (summary.unseen or {}).items() if key != "series"}
    return {"run_dir": str(outcome.run_dir), "status": summary.status, "stop_reason": summary.stop_reason, "trainer": summary.trainer,
            "algorithm": summary.algorithm, "seed": summary.seed, "throughput": asdict(summary.throughput),
            "test": summary.test or None, "selected_model": summary.selected_model, "unseen": unseen or None,
            "time_to_quality_s": summary.learning.time_to_quality_s}


def print_run_summary(console: Console, outcome) -> None:
    summary: RunSummary = outcome.summary
    throughput, training = summary.throughput, summary.training
    console.print(f"[bold]{summary.trainer}[/] run {summary.status} ({escape(summary.stop_reason)}) · {summary.data} · {summary.fee_model}",
                  highlight=False)
    rates = f"{number(throughput.steps_per_s, '{:,.0f}')} steps/s, {number(throughput.optimizer_steps_per_s, '{:,.1f}')} optimizer steps/s"
    timing = (f"{throughput.train_s:.1f} s of training ({rates}; warm-up {throughput.warmup_s:.1f} s not counted)" if throughput.train_s else
              f"{throughput.warmup_s:.1f} s, all of it warm-up ({rates} over warm-up, compilation and allocation included)")
    console.print(f"  {summary.algorithm}: {throughput.episodes:,} episodes, {throughput.env_steps:,} env-steps in {timing}; updates "
                  f"macro:micro {training.get('macro_updates')}:{training.get('micro_updates')}", highlight=False)
    if summary.selected_model and summary.selected_model.get("verdict"):
        console.print(f"  selection: {summary.selected_model['verdict']}", highlight=False)
    if summary.test:
        console.print(metrics_table(summary.test, "Test split (greedy agent vs baselines)", console.width))
    if summary.test_by_series:
        console.print(series_table(summary.test_by_series, "Test split by symbol", console.width))
    unseen = summary.unseen
    if unseen:
        console.print(f"  unseen series ({len(unseen['series'])}): agent Sharpe {unseen['agent_sharpe']:.2f} · trailing rule "
                      f"{unseen['trailing_rule_sharpe']:.2f} · buy-and-hold {unseen['buy_and_hold_sharpe']:.2f} · "
                      f"beats buy-and-hold on {unseen['beats_buy_and_hold']} · long {unseen['long']:.0%} / short {unseen['short']:.0%}",
                      highlight=False)
    console.print(f"Run folder: {outcome.run_dir}", highlight=False, soft_wrap=True)


def print_comparison(console: Console, comparison: Comparison) -> None:
    console.print(comparison_table(comparison, console.width))
    for warning in comparison.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    verdict = comparison.verdict()
    console.print(verdict_table(verdict, console.width))
    console.print(improvement_text(verdict), highlight=False)
    chart = quality_chart(comparison, width=min(console.width, 100))
    if chart:
        console.print(Text.from_ansi(chart))
    if comparison.folder:
        console.print(f"[dim]comparison folder:[/] {comparison.folder}", highlight=False, soft_wrap=True)


def quality_chart(comparison: Comparison, width: int = 80) -> str:
    """Validation score against wall time for every run on one plotext chart (time-to-quality)."""
    import plotext as plt

    curves = [(f"{side.label} s{summary.seed}" if len(side.summaries) > 1 else side.label, summary.learning.validations)
              for side in (comparison.left, comparison.right) for summary in side.summaries]
    if not any(validations for _, validations in curves):
        return ""
    plt.clear_figure()
    plt.plotsize(width, 16)
    plt.title("validation score against wall time")
    plt.xlabel("seconds")
    for name, validations in curves:
        if validations:
            plt.plot([v["elapsed_s"] for v in validations], [v["val_score"] for v in validations], label=name, marker="braille")
    targets = [s.learning.quality_target for s in comparison.right.summaries if s.learning.quality_target is not None]
    if targets:
        plt.hline(float(np.mean(targets)))
    return plt.build()
