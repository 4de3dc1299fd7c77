"""Screens beyond the main one: history of runs, one run's details, a comparison table, and dialogs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from asym_tui.widgets import Chart
from engine.compare import by_trainer, comparison_rows, speedup
from engine.runs import list_runs


def _number(value, pattern: str = "{:,.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "N/A"
    return pattern.format(value)


class ComparisonScreen(ModalScreen):
    """The seed's comparison table for two runs, with the winner of each row."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, original: dict, optimized: dict, title: str = "Original vs optimized"):
        super().__init__()
        self.original, self.optimized, self.title_text = original, optimized, title

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="wide"):
            yield Label(self.title_text, classes="dialog-title")
            yield Chart("Validation score against wall time (time-to-quality)", "score", "seconds", id="quality-chart")
            yield DataTable(id="comparison", cursor_type="row", zebra_stripes=True)
            yield Button("Close", id="close")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("metric", self.original.get("trainer", "A"), self.optimized.get("trainer", "B"), "winner")
        for row in comparison_rows(self.original, self.optimized):
            table.add_row(row.metric, row.format(row.original), row.format(row.optimized), row.winner)
        ratio = speedup(self.original, self.optimized)
        table.add_row("speedup (episodes/min)", "1.0×", _number(ratio, "{:,.1f}×"), "optimized" if ratio and ratio > 1 else "—")
        lines = []
        for summary in (self.original, self.optimized):
            validations = (summary.get("learning") or {}).get("validations") or []
            lines.append((summary.get("trainer", "run"), [v["elapsed_s"] for v in validations], [v["val_score"] for v in validations]))
        self.query_one("#quality-chart", Chart).draw(lines)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss()


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes", id="yes", variant="error")
                yield Button("No", id="no", variant="primary")

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
                yield Button("Save", id="save", variant="success")
                yield Button("Cancel", id="cancel")

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
        summary = self.run["summary"]
        self.query_one("#run-title", Static).update(
            f"[b]{path.name}[/b] — {summary.get('trainer', '?')} · {summary.get('status', '?')} · "
            f"{_number(summary.get('throughput', {}).get('episodes_per_min'), '{:,.0f}')} episodes/min · {path}")
        if (path / "metrics.csv").is_file():
            frame = pd.read_csv(path / "metrics.csv")
            frame = frame[frame["phase"] == "training"]
            minutes = (frame["elapsed_s"] / 60).tolist()
            self.query_one("#detail-throughput", Chart).draw([("episodes/min", minutes, frame["episodes_per_min"].tolist())])
            self.query_one("#detail-sharpe", Chart).draw([("train", minutes, frame["train_sharpe"].tolist()),
                                                          ("validation", minutes, frame["val_sharpe"].astype(float).tolist())])
            self.query_one("#detail-portfolio", Chart).draw([("portfolio", minutes, frame["portfolio"].tolist())])
        if (path / "equity_test.csv").is_file():
            equity = pd.read_csv(path / "equity_test.csv")
            bars = list(range(len(equity)))
            self.query_one("#detail-equity", Chart).draw([(name, bars, equity[f"{name}_equity"].tolist()) for name in ("agent", "buy_and_hold")])
        table = self.query_one("#detail-metrics", DataTable)
        table.add_columns("policy (test)", "return", "Sharpe", "Sortino", "max DD", "trades", "win rate", "exposure")
        for name, m in summary.get("test", {}).items():
            table.add_row(name.replace("_", " "), _number(m["total_return"] * 100, "{:+.2f}%"), _number(m["sharpe"]),
                          _number(m["sortino"]), _number(m["max_drawdown"] * 100, "{:.2f}%"), str(m.get("trades", "")),
                          _number(m.get("win_rate", 0) * 100, "{:.0f}%"), _number(m.get("exposure", 0) * 100, "{:.0f}%"))


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
        table.add_columns("", "run", "trainer", "status", "episodes/min", "test Sharpe", "B&H Sharpe", "final portfolio", "device")
        self.action_reload()
        table.focus()

    def action_reload(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.runs = list_runs(self.out_dir)
        for index, run in enumerate(self.runs):
            summary = run["summary"]
            test = summary.get("test", {})
            name = str(run["path"].relative_to(Path(self.out_dir)))
            table.add_row("✓" if run["path"] in self.marked else "", name, run["config"].get("trainer", "?"), summary.get("status", "?"),
                          _number(summary.get("throughput", {}).get("episodes_per_min"), "{:,.0f}"),
                          _number(test.get("agent", {}).get("sharpe")), _number(test.get("buy_and_hold", {}).get("sharpe")),
                          _number(summary.get("final_portfolio"), "${:,.2f}"), summary.get("device", "?"), key=str(index))
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
        first, second = by_trainer(*(by_path.get(path, {}) for path in self.marked))
        names = {id(by_path.get(path)): path.name for path in self.marked}
        self.app.push_screen(ComparisonScreen(first, second, f"{names.get(id(first), '?')} vs {names.get(id(second), '?')}"))


class DoctorScreen(ModalScreen):
    """The facts of `asym-tui doctor`, probed in a thread so the screen never waits."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]
    facts: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="wide"):
            yield Label("This machine (asym-tui doctor)", classes="dialog-title")
            yield Static("Probing AMP and torch.compile…", id="doctor-facts")
            yield Button("Close", id="close")

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
