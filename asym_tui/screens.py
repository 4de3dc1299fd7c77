"""Screens beyond the main one: history of runs, one run's details, a comparison table, and dialogs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from rich.markup import escape
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from asym_tui.tables import (HISTORY_COLUMNS, METRIC_COLUMNS, VERDICT_COLUMNS, comparison_cells, comparison_title, history_cells,
                             improvement_text, metrics_cells, number, verdict_cells)
from asym_tui.charts import Chart, SeedChart
from engine.compare import Comparison, comparison_of
from engine.events import RunSummary
from engine.runs import list_runs


class ComparisonScreen(ModalScreen):
    """The seed's comparison table for two sides (one run or several seeds each), with the winner of each
    row, and the verdict: every seed as a point beside its side's IQM and 95 % interval."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, comparison: Comparison, title: str | None = None):
        super().__init__()
        self.comparison, self.title_text = comparison, title or comparison_title(comparison)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="full"):
            yield Label(self.title_text, classes="dialog-title")
            for warning in self.comparison.warnings:
                yield Label(f"[yellow]warning:[/] {escape(warning)}", classes="warning")
            with Horizontal(id="comparison-top"):  # the table beside both charts, so the verdict below needs no scrolling
                yield DataTable(id="comparison", cursor_type="row", zebra_stripes=True)
                with Vertical(id="comparison-charts"):
                    yield Chart("Validation score against wall time", "score", short_title="Time to quality", id="quality-chart")
                    yield SeedChart(id="seed-chart")
            yield DataTable(id="verdict", cursor_type="row", zebra_stripes=True)
            yield Label(id="improvement")
            yield Button("Close (Esc)", id="close", compact=True)

    def on_resize(self) -> None:
        self.query_one("#comparison-top").set_class(self.size.width < 110, "narrow")  # charts under the table

    def on_mount(self) -> None:
        comparison = self.comparison
        table = self.query_one("#comparison", DataTable)
        table.add_columns("metric", *comparison.labels, "winner")
        for cells in comparison_cells(comparison):
            table.add_row(*cells)
        self.query_one("#quality-chart", Chart).draw([(label, [v["elapsed_s"] for v in s.learning.validations],
                                                       [v["val_score"] for v in s.learning.validations])
                                                      for side in (comparison.left, comparison.right)
                                                      for s in side.summaries for label in [seed_label(side, s)]])
        verdict = comparison.verdict()
        verdicts = self.query_one("#verdict", DataTable)
        verdicts.add_columns(*VERDICT_COLUMNS)
        for cells in verdict_cells(verdict):
            verdicts.add_row(*cells)
        self.query_one("#seed-chart", SeedChart).draw(verdict)
        self.query_one("#improvement", Label).update(improvement_text(verdict))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss()


def seed_label(side, summary: RunSummary) -> str:
    return f"{side.label} s{summary.seed}" if len(side.summaries) > 1 else side.label


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class SavePresetScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Save the current settings as a user preset named:")
            yield Input(id="preset-name", placeholder="my-preset", restrict=r"[A-Za-z0-9_.\-]*")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (Enter)", id="save", variant="success")
                yield Button("Cancel (Esc)", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one(Input).value.strip() or None if event.button.id == "save" else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RunDetailScreen(Screen):
    """One past run: its charts (from metrics.csv) and its test metrics next to the baselines."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, run: dict):
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="run-title")
        with Grid(id="detail-charts"):
            yield Chart("Throughput (episodes/min)", "eps/min", id="detail-throughput")
            yield Chart("Sharpe (train rolling, validation)", "Sharpe", id="detail-sharpe")
            yield Chart("Portfolio value ($)", "$", id="detail-portfolio")
            yield Chart("Test split equity: agent vs buy-and-hold", "$", xlabel="bars", id="detail-equity")
        yield DataTable(id="detail-metrics", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        path: Path = self.run["path"]
        summary: RunSummary = self.run["summary"]
        name = summary.trainer
        self.query_one("#run-title", Static).update(
            f"[b]{path.name}[/b] — {summary.trainer} · {summary.status} · "
            f"{number(summary.throughput.episodes_per_min, '{:,.0f}')} episodes/min · {path}")
        if (path / "metrics.csv").is_file():
            frame = pd.read_csv(path / "metrics.csv")
            frame = frame[(frame["phase"] == "training") & (frame["episodes"] > 0)]  # no ramp from a made-up (0, 0)
            seconds, xmax = frame["elapsed_s"].tolist(), float(frame["elapsed_s"].max()) if len(frame) else None
            self.query_one("#detail-throughput", Chart).draw([(name, seconds, frame["episodes_per_min"].tolist())], xmax=xmax)
            self.query_one("#detail-sharpe", Chart).draw([(f"{name} train", seconds, frame["train_sharpe"].tolist()),
                                                          (f"{name} val", seconds, frame["val_sharpe"].astype(float).tolist())], xmax=xmax)
            self.query_one("#detail-portfolio", Chart).draw([(name, seconds, frame["portfolio"].tolist())], xmax=xmax)
        if (path / "equity_test.csv").is_file():
            equity = pd.read_csv(path / "equity_test.csv")
            bars = list(range(len(equity)))
            self.query_one("#detail-equity", Chart).draw([(f"{name} agent", bars, equity["agent_equity"].tolist()),
                                                          ("buy-and-hold", bars, equity["buy_and_hold_equity"].tolist())])
        table = self.query_one("#detail-metrics", DataTable)
        table.add_columns("policy (test)", *METRIC_COLUMNS[1:])
        for cells in metrics_cells(summary.test):
            table.add_row(*cells)


class HistoryScreen(Screen):
    """Past runs under the runs folder (sweeps included); open one, or mark two and compare."""

    BINDINGS = [
        Binding("enter", "open", "Open", priority=True),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare marked"),
        Binding("r", "reload", "Reload"),
        Binding("escape,q", "app.pop_screen", "Back"),
    ]

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir, self.runs, self.marked = out_dir, [], []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(f"Runs in {Path(self.out_dir).resolve()} — Enter opens, Space marks, c compares two marked runs", id="history-help")
        yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*HISTORY_COLUMNS)
        self.action_reload()
        table.focus()

    def action_reload(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.runs = list_runs(self.out_dir)
        for index, run in enumerate(self.runs):
            name = str(run["path"].relative_to(Path(self.out_dir)))
            table.add_row(*history_cells(name, run["config"].get("trainer", "?"), run["summary"], run["path"] in self.marked), key=str(index))
        if not self.runs:
            self.notify(f"No runs in {self.out_dir} yet — start one from the main screen", severity="information")

    def _current(self) -> dict | None:
        table = self.query_one(DataTable)
        return self.runs[table.cursor_row] if self.runs and table.cursor_row < len(self.runs) else None

    def action_open(self) -> None:
        if run := self._current():
            self.app.push_screen(RunDetailScreen(run))

    def action_mark(self) -> None:
        run = self._current()
        if run is None:
            return
        if run["path"] in self.marked:
            self.marked.remove(run["path"])
        else:
            self.marked = (self.marked + [run["path"]])[-2:]
        row = self.query_one(DataTable).cursor_row
        self.action_reload()
        self.query_one(DataTable).move_cursor(row=row)

    def action_compare(self) -> None:
        if len(self.marked) != 2:
            self.notify("Mark two runs with Space first", severity="warning")
            return
        by_path = {run["path"]: run["summary"] for run in self.runs}
        first, second = (by_path.get(path, RunSummary()) for path in self.marked)
        comparison = comparison_of([first], [second])
        names = {id(summary): path.name for path, summary in zip(self.marked, (first, second))}
        left, right = (names[id(side.summaries[0])] for side in (comparison.left, comparison.right))
        self.app.push_screen(ComparisonScreen(comparison, f"{left} vs {right}"))


class DoctorScreen(ModalScreen):
    """The facts of `asym-tui doctor`, probed in a thread so the screen never waits."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]
    facts: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="wide"):
            yield Label("This machine (asym-tui doctor)", classes="dialog-title")
            yield Static("Probing AMP and torch.compile…", id="doctor-facts")
            yield Button("Close (Esc)", id="close")

    def on_mount(self) -> None:
        self.probe()

    @work(thread=True, exit_on_error=False)
    def probe(self) -> None:
        from asym_tui.tables import doctor_table
        from engine.doctor import diagnose

        facts = diagnose()
        self.app.call_from_thread(self.show_facts, facts, doctor_table(facts))

    def show_facts(self, facts: dict, table) -> None:
        self.facts = facts
        self.query_one("#doctor-facts", Static).update(table)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss()


class HelpScreen(ModalScreen):
    """Every key of the screen below it, with what it does (made from the bindings, so it never drifts)."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, keys: list[tuple[str, str]]):
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Keys", classes="dialog-title")
            table = DataTable(id="help-keys", show_cursor=False)
            table.add_columns("key", "action")
            for key, description in self.keys:
                table.add_row(key, description)
            yield table
            yield Label("Ctrl+P opens the command palette; the mouse works everywhere.")
            yield Button("Close (Esc)", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss()
