"""The live view: what the training thread's events become on screen. Events are only recorded as they
arrive; a 4 Hz timer redraws the status line, key numbers, diagnostics and charts. Mixed into AsymApp."""

from __future__ import annotations

import re
import time

from rich.markup import escape

from asym_tui.charts import ChartGrid
from asym_tui.controls import fee_level
from asym_tui.tables import stage_text
from asym_tui.widgets import Diagnostics, KeyNumbers, LogPanel, Series, StatusLine
from engine.events import Progress

REDRAW_SECONDS = 0.25


class LiveView:
    """Series per trainer, the latest event, the phase and its start; redraw, status line and log."""

    def reset_view(self, trainers: list[str]) -> None:
        """A new launch: empty series, and its runs in order ("1 of 2")."""
        self.series, self.latest, self.finished, self.trainers = {}, None, [], trainers
        self.hints_logged: set[str] = set()

    def record(self, event: Progress) -> None:
        self.series.setdefault(event.trainer, Series()).add(event)
        if self.latest is None or event.phase != self.latest.phase or event.trainer != self.latest.trainer:
            self.set_phase(event.phase)
        self.latest = event
        self.dirty = True

    def closing(self) -> bool:
        """The app is closing and its widgets are gone (a run's last messages and redraws can come after them)."""
        return not self.query(StatusLine)

    def redraw(self) -> None:
        if self.closing():
            return
        if self.running:
            self.show_status()
        if not self.dirty:
            return
        self.dirty = False
        initial = self.last_config.initial_equity if self.last_config else 10_000.0
        self.query_one(KeyNumbers).show(self.latest, initial)
        self.show_diagnostics()
        self.query_one(ChartGrid).draw(self.series, self.latest.device_label if self.latest else "CPU")

    def show_diagnostics(self) -> None:
        """PPO's diagnostics of the latest update; each hint of one out of its range goes to the log once."""
        from engine.learners import diagnostic_hints

        hints = diagnostic_hints(self.latest) if self.latest else []
        for hint in hints:
            topic = re.match(r"[^\d\-]*", hint).group()  # "approx KL ", "clip fraction ", ...: one log line each
            if topic not in self.hints_logged:
                self.hints_logged.add(topic)
                self.log_line(f"[yellow]diagnostics[/]: {escape(hint)}")
        self.query_one(Diagnostics).show(self.latest, hints)

    def set_phase(self, phase: str) -> None:
        self.phase, self.phase_since = phase, time.monotonic()

    def show_status(self) -> None:
        """Phase (with its seconds while compiling or warming up), the stage of a comparison, time left, fees."""
        event = self.latest
        trainer = event.trainer if event else (self.trainers[0] if self.trainers else "")
        slow = self.phase in ("starting", "compiling", "warming up")
        duration = event.duration_s if event else (self.last_config.duration_s if self.last_config else 0.0)
        self.query_one(StatusLine).show(self.phase, stage_text(trainer, self.trainers), event.elapsed_s if event else None,
                                        duration or 0.0, time.monotonic() - self.phase_since if slow else None, self.fee_label())

    def fee_label(self) -> str:
        """The run's fee level in a word or two: "spot-taker", or "fees 0.08%+0.02%"."""
        config = self.last_config
        if config is None:
            return ""
        level = fee_level(config)
        costs = level if level != "preset" else f"fees {100 * config.commission:.3g}%+{100 * config.slippage:.3g}%"
        return costs + ("" if config.allow_short else ", no shorts")

    def log_line(self, text: str) -> None:
        self.query_one(LogPanel).add(f"[dim]{self.clock():%H:%M:%S}[/] {text}")
