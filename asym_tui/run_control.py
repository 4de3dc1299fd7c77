"""Run control: start, stop and compare, the training thread and the messages it posts, and what the app
says when a run ends. Mixed into AsymApp; the thread only posts messages, the handlers run on the UI."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from rich.markup import escape
from textual import work
from textual.message import Message

from asym_tui.controls import ControlPanel
from asym_tui.screens import ComparisonScreen
from asym_tui.tables import comparison_title, result_text
from asym_tui.widgets import KeyNumbers, StatusLine, no_edge
from engine.config import ConfigError, RunConfig, load_config, trading_costs
from engine.errors import UserError
from engine.events import LogMessage, Progress, RunSummary
from engine.monitor import resolve_device


class EngineRunner:
    """The real engine: one run, or original then optimized."""

    def train(self, config: RunConfig, on_event: Callable, stop: threading.Event):
        from engine.runs import execute_run

        return (execute_run(config, on_event=on_event, stop=stop),)

    def compare(self, config: RunConfig, on_event: Callable, stop: threading.Event, seeds: int = 1):
        from engine.compare import run_comparison

        return run_comparison(config, seeds, on_event=on_event, stop=stop)


class EngineEvent(Message):
    """A progress event or log message from the training thread."""

    def __init__(self, event: Progress | LogMessage):
        super().__init__()
        self.event = event


class RunFinished(Message):
    def __init__(self, outcomes: tuple, error: str | None, comparison=None):
        super().__init__()
        self.outcomes, self.error, self.comparison = outcomes, error, comparison


class RunControl:
    """Start, stop, compare; a run's thread worker and its messages. Needs the live view's log_line,
    set_phase, redraw and reset_view (asym_tui.live_view.LiveView)."""

    def build_config(self) -> RunConfig | None:
        """The run config from the controls, or None (with a notification saying what is wrong)."""
        panel = self.query_one(ControlPanel)
        if invalid := panel.invalid_field("num_envs", "duration"):
            field, message = invalid
            self.notify(message, title="Invalid setting", severity="error")
            field.focus()
            return None
        try:
            config = load_config(panel.preset, panel.overrides(self.out_dir))
            resolve_device(config.device)
        except ConfigError as exc:
            self.notify(str(exc), title="Invalid setting", severity="error")
            return None
        if config.min_num_envs > config.num_envs:
            config = config.replace(min_num_envs=config.num_envs)
        return config

    def action_start(self) -> None:
        self.launch(compare=self.query_one(ControlPanel).mode == "both")

    def action_compare(self) -> None:
        self.launch(compare=True)

    def launch(self, compare: bool) -> None:
        if self.running:
            self.notify("A run is already in progress; stop it first", severity="warning")
            return
        config = self.build_config()
        if config is None:
            return
        panel = self.query_one(ControlPanel)
        if compare and (invalid := panel.invalid_field("seeds")):
            self.notify(invalid[1], title="Invalid setting", severity="error")
            return
        self.seeds = panel.seeds if compare else 1
        self.last_config = config
        self.reset_view(["original", "optimized"] if compare else [config.trainer])
        self.stop_event = threading.Event()
        self.set_running(True)
        self.set_phase("starting")
        what = f"original then optimized, {self.seeds} seed(s) each" if compare else config.trainer
        self.log_line(f"Starting {what}: preset {config.preset}, {config.algorithm}, {config.num_envs} envs, AMP {'on' if config.use_amp else 'off'}, "
                      f"compile {'on' if config.compile_model else 'off'}, {config.duration_s:g} s, data {escape(config.data)}; "
                      f"{escape(trading_costs(config))}")
        self.train_in_background(config, compare)

    @work(thread=True, exclusive=True, group="training", exit_on_error=False)
    def train_in_background(self, config: RunConfig, compare: bool) -> None:
        """Runs in a thread: only posts messages, never touches widgets."""
        post = lambda event: self.post_message(EngineEvent(event))
        try:
            if compare:
                self.post_message(RunFinished((), None, self.runner.compare(config, post, self.stop_event, self.seeds)))
            else:
                self.post_message(RunFinished(self.runner.train(config, post, self.stop_event), None))
        except UserError as exc:
            self.post_message(RunFinished((), str(exc)))
        except Exception as exc:  # the UI must survive any engine failure and say what it was
            self.post_message(RunFinished((), f"{type(exc).__name__}: {exc}"))

    def action_stop(self) -> None:
        if self.running:
            self.stop_event.set()
            self.log_line("[yellow]Stopping after the current update; the checkpoint and summary will be written…[/]")

    def set_running(self, running: bool) -> None:
        self.running = running
        self.query_one(ControlPanel).set_running(running)

    def on_engine_event(self, message: EngineEvent) -> None:
        if self.closing():
            return
        event = message.event
        if isinstance(event, LogMessage):
            colour = {"warning": "yellow", "error": "red"}.get(event.level, "cyan")
            self.log_line(f"[{colour}]{event.level}[/]: {escape(event.text)}")
            return
        self.record(event)

    def on_run_finished(self, message: RunFinished) -> None:
        if self.closing():
            self.running = False
            return
        self.set_running(False)
        self.redraw()
        if message.error:
            self.notify(message.error, title="Run failed", severity="error", timeout=10)
            self.log_line(f"[red]error[/]: {escape(message.error)}")
        self.finished = list(message.outcomes)
        for outcome in message.outcomes:
            self.announce(outcome)
        if message.outcomes:
            self.set_phase("done" if not message.error else "failed")
            summary = message.outcomes[-1].summary
            self.show_result(summary, f"{summary.trainer} {summary.status}", summary.stop_reason)
        else:
            self.set_phase("failed" if message.error else "ready")
        if message.comparison is not None:
            self.show_comparison(message.comparison)
        if self.quitting:
            self.exit()

    def show_result(self, summary: RunSummary, what: str, reason: str = "") -> None:
        """The result cards and the status line for a finished run (or the last run of a comparison)."""
        initial = self.last_config.initial_equity if self.last_config else 10_000.0
        self.query_one(KeyNumbers).show_result(summary, initial)
        notes = ("flat (no edge)",) if no_edge(summary) else ()
        self.query_one(StatusLine).show_done(what, reason, notes, summary.throughput.elapsed_s, self.fee_label())

    def show_comparison(self, comparison) -> None:
        """Each run's result in the log, the folder, then the comparison table and verdict."""
        for side in (comparison.left, comparison.right):
            for summary in side.summaries:
                self.log_line(f"[b]{escape(side.label)}[/b] seed {summary.seed} {summary.status}: {escape(result_text(summary))}")
        if comparison.folder:
            self.run_dirs.append(Path(comparison.folder))
            self.log_line(f"Comparison folder: {escape(str(comparison.folder))}")
        for warning in comparison.warnings:
            self.log_line(f"[yellow]warning[/]: {escape(warning)}")
        summaries = comparison.right.summaries or comparison.left.summaries
        if summaries:
            self.show_result(summaries[-1], f"compared {comparison_title(comparison)}")
        if comparison.left.summaries and comparison.right.summaries and not self.quitting:
            self.push_screen(ComparisonScreen(comparison))

    def announce(self, outcome) -> None:
        """A finished run's result, fee model and folder in the log, and a short notification."""
        summary = outcome.summary
        self.run_dirs.append(Path(outcome.run_dir))
        self.log_line(f"[b]{summary.trainer}[/b] {summary.status} ({escape(summary.stop_reason)}): {escape(result_text(summary))}")
        if (summary.selected_model or {}).get("verdict"):
            self.log_line(f"selection: {escape(summary.selected_model['verdict'])}")
        if summary.fee_model:
            self.log_line(f"costs: {escape(summary.fee_model)}")
        self.log_line(f"Run folder: {escape(str(outcome.run_dir))}")
        self.notify(str(outcome.run_dir), title=f"{summary.trainer} run saved", timeout=4)
