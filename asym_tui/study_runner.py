"""A walk-forward study for the app: the engine's `run_walkforward`, reporting its plan, the progress of the
run in hand and each fold's row as it finishes (tests can pass a fake runner with the same `run`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from engine.events import LogMessage, Progress


@dataclass(frozen=True)
class StudyForm:
    """What the walk-forward form asks (None: the command line's default)."""

    train: str | None = None
    test: str | None = None
    step: str | None = None
    purge: int | None = None
    seeds: int = 1
    trainers: str = "optimized"
    cpcv: str | None = None


class StudyPlanned(Message):
    """The study's header (folds, windows, purge, fees), its folder and how many runs it holds."""

    def __init__(self, header: str, folder: Path, runs: int):
        super().__init__()
        self.header, self.folder, self.runs = header, folder, runs


class StudyEvent(Message):
    def __init__(self, event: Progress | LogMessage):
        super().__init__()
        self.event = event


class FoldRow(Message):
    """One fold × candidate × seed, judged out of sample (engine.walkforward.fold_row)."""

    def __init__(self, row: dict):
        super().__init__()
        self.row = row


class StudyFinished(Message):
    def __init__(self, study=None, error: str | None = None):
        super().__init__()
        self.study, self.error = study, error


class StudyRunner:
    """The real engine, as `asym-tui walkforward` drives it."""

    def run(self, preset: str, overrides: dict, form: StudyForm, on_plan: Callable, on_event: Callable, on_row: Callable,
            stop: threading.Event):
        from asym_tui.commands_walkforward import header
        from engine.walkforward import candidates, new_study_dir, plan_study, run_walkforward, study_spec

        spec = study_spec(preset, overrides, form.train, form.test, form.step, form.purge, form.seeds, form.trainers, [], form.cpcv)
        base, folds, windows, grid = plan_study(spec)
        folder = new_study_dir(base.out_dir, None)
        on_plan(header(spec, base, folds), folder, len(folds) * len(candidates(spec["trainers"], grid)) * spec["seeds"])
        return run_walkforward(base, spec, folds, folder, grid, windows, stop=stop, on_event=on_event, on_row=on_row)
