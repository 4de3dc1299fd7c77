"""The walk-forward screen: a small form (the command line's options and defaults), the study in a thread
worker that only posts messages, a per-fold table and Sharpe chart filling as folds finish, then the
aggregate with its interval and the probability of backtest overfitting."""

from __future__ import annotations

import threading

import pandas as pd
from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.validation import Integer, Regex
from textual.widgets import Button, DataTable, Footer, Header, Input, Select, Static

from asym_tui.charts import Chart
from asym_tui.controls import field_row
from asym_tui.screens import ConfirmScreen
from asym_tui.study_runner import FoldRow, StudyEvent, StudyFinished, StudyForm, StudyPlanned, StudyRunner
from asym_tui.tables import AGGREGATE_COLUMNS, FOLD_RUN_COLUMNS, fold_run_cells, overfitting_text, walkforward_aggregate_cells
from asym_tui.widgets import StatusLine
from engine.errors import UserError
from engine.events import LogMessage

FOLD_CELL_WIDTHS = {"validation": 13, "candidate": 24, "test window": 21}  # the widest cells they take; 7 for the rest
TRAINER_SETS = [("optimized", "optimized"), ("original", "original"), ("both", "original,optimized")]
BARS = Regex(r"^\s*\d*\s*$", failure_description="purge is a whole number of bars")  # empty: the default
LENGTH = Regex(r"^\s*(\d+(\.\d+)?\s*[a-zA-Z]+)?\s*$", failure_description="use a length of time like 30d, 12h or 2w")


def fold_sharpes(rows: list[dict]) -> list[tuple[str, list[float], list[float]]]:
    """Per-fold out-of-sample Sharpe: each candidate's chosen policies (mean over seeds) and buy-and-hold."""
    frame = pd.DataFrame([row for row in rows if "agent" in row])
    if frame.empty:
        return []
    folds = list(dict.fromkeys(frame["fold"]))
    x = list(range(1, len(folds) + 1))
    lines = [(str(label), x, part.groupby("fold")["agent"].mean().reindex(folds).tolist())
             for label, part in frame.groupby("candidate", sort=False)]
    return [*lines, ("buy-and-hold", x, frame.groupby("fold")["buy_and_hold"].mean().reindex(folds).tolist())]


class WalkForwardScreen(Screen):
    """Walk-forward (or CPCV) on the main screen's preset, data, duration per run and fees."""

    BINDINGS = [
        Binding("s", "start", "Start the study", id="wf_start"),
        Binding("x", "stop", "Stop the study", id="wf_stop"),
        Binding("escape,q", "back", "Back", id="wf_back"),
    ]

    def __init__(self, preset: str, overrides: dict, runner=None):
        super().__init__()
        self.preset, self.overrides, self.runner = preset, overrides, runner or StudyRunner()
        self.stop_event = threading.Event()
        self.running = self.leaving = False
        self.rows: list[dict] = []
        self.runs = 0
        self.study = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="wf-body"):
            with Vertical(id="wf-form"):
                with Horizontal(id="wf-buttons"):
                    yield Button("Start", id="wf-start", variant="success", tooltip="s", action="screen.start")
                    yield Button("Stop", id="wf-stop", variant="error", disabled=True, tooltip="x", action="screen.stop")
                with VerticalScroll(id="wf-fields"):
                    yield field_row("train", Input(id="wf-train", placeholder="half the data", compact=True, validators=[LENGTH]),
                                    "training window per fold (validation is its latest part), e.g. 30d")
                    yield field_row("test", Input(id="wf-test", placeholder="rest in 4", compact=True, validators=[LENGTH]),
                                    "test window per fold, e.g. 7d (default: the rest of the data in 4 windows)")
                    yield field_row("step", Input(id="wf-step", placeholder="the test", compact=True, validators=[LENGTH]),
                                    "how far each fold moves (default: the test window)")
                    yield field_row("purge", Input(id="wf-purge", placeholder="auto", type="integer", compact=True,
                                                   validators=[BARS]),
                                    "bars between training data and each test window (default: macro window + warm-up)")
                    yield field_row("seeds", Input("1", id="wf-seeds", type="integer", compact=True,
                                                   validators=[Integer(1, 100, failure_description="seeds must be 1–100")]),
                                    "seeds per fold and candidate")
                    yield Select(TRAINER_SETS, id="wf-trainers", allow_blank=False, value="optimized", compact=True,
                                 tooltip="trainers compared (the candidates of the overfitting test)")
                    yield field_row("CPCV N,K", Input(id="wf-cpcv", placeholder="off", compact=True,
                                                      validators=[Regex(r"^\s*(\d+\s*,\s*\d+)?\s*$", failure_description="CPCV takes N,K, e.g. 6,2")]),
                                    "combinatorial purged cross-validation: N groups by time, every choice of K as test")
                    yield Static(id="wf-settings")
            with Vertical(id="wf-results"):
                yield StatusLine(id="wf-status")
                yield DataTable(id="wf-folds", cursor_type="row", zebra_stripes=True)
                yield DataTable(id="wf-aggregate", show_cursor=False)
                yield Chart("Out-of-sample Sharpe per fold", "Sharpe", xlabel="fold", short_title="Sharpe per fold", integer_x=True,
                            id="wf-chart")
                yield Static(id="wf-pbo")
        yield Footer()

    def on_resize(self) -> None:
        self.query_one("#wf-form").set_class(self.size.width < 100, "narrow")

    def on_mount(self) -> None:
        folds = self.query_one("#wf-folds", DataTable)
        for column in FOLD_RUN_COLUMNS:  # fixed widths: rows arrive one by one, and a column that widens redraws unevenly
            folds.add_column(column, width=max(len(column), FOLD_CELL_WIDTHS.get(column, 7)))
        self.query_one("#wf-form").border_title = "walk-forward"
        overrides = self.overrides
        self.query_one("#wf-settings", Static).update(
            f"preset {escape(self.preset)} · data {escape(overrides.get('data', 'synthetic'))} · {overrides.get('duration_s', 0):g} s per run "
            "(from the main screen's controls)")
        self.query_one("#wf-status", StatusLine).show("ready", "s starts the study")
        self.query_one("#wf-chart", Chart).draw([])

    def form(self) -> StudyForm | None:
        """The form's values, or None (with a notification) when one is not valid."""
        inputs = {name: self.query_one(f"#wf-{name}", Input) for name in ("train", "test", "step", "purge", "seeds", "cpcv")}
        for field in inputs.values():
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                self.notify("; ".join(result.failure_descriptions), title="Invalid setting", severity="error")
                field.focus()
                return None
        text = {name: field.value.strip() or None for name, field in inputs.items()}
        return StudyForm(text["train"], text["test"], text["step"], int(text["purge"]) if text["purge"] else None,
                         int(text["seeds"] or 1), str(self.query_one("#wf-trainers", Select).value), text["cpcv"])

    def action_start(self) -> None:
        if self.running:
            self.notify("The study is running; x stops it", severity="warning")
            return
        form = self.form()
        if form is None:
            return
        self.rows, self.study, self.runs = [], None, 0
        self.query_one("#wf-folds", DataTable).clear()
        self.query_one("#wf-aggregate", DataTable).clear()
        self.query_one("#wf-pbo", Static).update("")
        self.query_one("#wf-chart", Chart).draw([])
        self.stop_event = threading.Event()
        self.set_running(True)
        self.query_one("#wf-status", StatusLine).show("planning", "reading the data, making the folds")
        self.run_study(form)

    @work(thread=True, exclusive=True, group="study", exit_on_error=False)
    def run_study(self, form: StudyForm) -> None:
        """Runs in a thread: only posts messages, never touches widgets."""
        try:
            study = self.runner.run(self.preset, self.overrides, form,
                                    on_plan=lambda header, folder, runs: self.post_message(StudyPlanned(header, folder, runs)),
                                    on_event=lambda event: self.post_message(StudyEvent(event)),
                                    on_row=lambda row: self.post_message(FoldRow(row)), stop=self.stop_event)
            self.post_message(StudyFinished(study))
        except UserError as exc:
            self.post_message(StudyFinished(error=str(exc)))
        except Exception as exc:  # the screen must survive any engine failure and say what it was
            self.post_message(StudyFinished(error=f"{type(exc).__name__}: {exc}"))

    def action_stop(self) -> None:
        if self.running:
            self.stop_event.set()
            self.query_one("#wf-status", StatusLine).show("stopping", "after the current update; finished folds are kept")

    def action_back(self) -> None:
        if not self.running:
            self.dismiss()
            return

        def answered(stop: bool | None) -> None:
            if stop:
                self.leaving = True
                self.action_stop()

        self.app.push_screen(ConfirmScreen("The study is running. Stop it (finished runs are kept; asym-tui walkforward --resume "
                                           "finishes it) and go back?"), answered)

    def set_running(self, running: bool) -> None:
        self.running = running
        self.query_one("#wf-start", Button).disabled = running
        self.query_one("#wf-stop", Button).disabled = not running

    def on_study_planned(self, message: StudyPlanned) -> None:
        self.runs = message.runs
        self.query_one("#wf-settings", Static).update(f"{message.header}\n[dim]{escape(str(message.folder))}[/]")

    def on_study_event(self, message: StudyEvent) -> None:
        event = message.event
        if isinstance(event, LogMessage):
            if event.level != "info":
                self.notify(event.text, severity="warning" if event.level == "warning" else "error", timeout=6)
            return
        run = f"run {min(len(self.rows) + 1, self.runs)} of {self.runs}" if self.runs else "run"
        self.query_one("#wf-status", StatusLine).show(event.phase, f"{run}: {event.trainer}", event.elapsed_s,
                                                      event.duration_s)

    def on_fold_row(self, message: FoldRow) -> None:
        self.rows.append(message.row)
        self.query_one("#wf-folds", DataTable).add_row(*fold_run_cells(message.row), key=message.row["trial"])
        self.query_one("#wf-chart", Chart).draw(fold_sharpes(self.rows))

    def on_study_finished(self, message: StudyFinished) -> None:
        self.set_running(False)
        status = self.query_one("#wf-status", StatusLine)
        if message.error:
            status.show("failed", escape(message.error))
            self.notify(message.error, title="Walk-forward failed", severity="error", timeout=10)
        else:
            self.show_study(message.study)
            judged = sum("agent" in row for row in self.rows)
            status.show("stopped" if self.stop_event.is_set() else "done", f"{judged} of {len(self.rows)} runs judged out of sample")
        if self.leaving:
            self.dismiss()

    def show_study(self, study) -> None:
        """The aggregate over folds × seeds with its interval, the PBO line, and the chart from every row."""
        self.study, self.rows = study, list(study.rows)
        folds = self.query_one("#wf-folds", DataTable)
        for row in self.rows:  # the study's own rows: runs a stop left undone show as such
            if row["trial"] not in folds.rows:
                folds.add_row(*fold_run_cells(row), key=row["trial"])
        aggregate = self.query_one("#wf-aggregate", DataTable)
        rows = walkforward_aggregate_cells(study.aggregate)
        aggregate.clear(columns=True)
        for index, column in enumerate(AGGREGATE_COLUMNS):  # all rows known: each column as wide as its widest cell
            aggregate.add_column(column, width=max([len(column), *(len(row[index]) for row in rows)]))
        aggregate.add_rows(rows)
        self.query_one("#wf-pbo", Static).update(escape(overfitting_text(study.pbo)))
        self.query_one("#wf-chart", Chart).draw(fold_sharpes(self.rows))
        self.app.run_dirs.append(study.folder)
