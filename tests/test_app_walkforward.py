"""The app's walk-forward screen: the form reaches the study, folds fill the table and chart as they finish,
the aggregate and PBO close it, Stop stops it; one tiny real study end to end."""

import threading
from pathlib import Path

import pandas as pd
from textual.widgets import DataTable, Input, Select, Static

from asym_tui.app import AsymApp
from asym_tui.charts import Chart
from asym_tui.screens import ConfirmScreen
from asym_tui.study_runner import StudyForm
from asym_tui.walkforward_screen import WalkForwardScreen
from asym_tui.widgets import StatusLine
from conftest import TINY_RUN
from engine.config import load_config, save_user_preset
from engine.events import Progress
from engine.walkforward import WalkForward, summarize
from test_app import FakeRunner, wait_for

SIZE = (120, 40)
PBO = {"pbo": 0.25, "groups": 8, "splits": 70, "candidates": 2}


def fake_row(fold: int, candidate: str, seed: int, agent: float) -> dict:
    start = pd.Timestamp("2024-01-10", tz="UTC") + pd.Timedelta(days=4 * fold)
    return {"trial": f"fold{fold:02d}-{candidate}-seed{seed}", "fold": f"fold{fold:02d}", "candidate": candidate, "seed": seed,
            "test_start": start.isoformat(), "test_end": (start + pd.Timedelta(days=4)).isoformat(), "status": "completed", "error": "",
            "agent": agent, "agent_psr": 0.5, "agent_return": 0.01, "trades": 4, "long": 0.4, "short": 0.3, "buy_and_hold": 0.5,
            "flat": 0.0, "best_constant": 0.6, "trailing_rule": -0.2, "best_constant_position": "long", "no_edge": agent == 0.0,
            "val_score": 1.0, "edge_bar": 0.5, "fee_model": "fees 0.1% + slippage 0.05% (spot-taker)"}


class FakeStudyRunner:
    """Three folds of one candidate and seed: progress events, then each fold's row; with `hold`, it waits
    for the stop signal after the first fold (a study stopped mid-way)."""

    AGENT = (1.2, 0.0, -0.4)

    def __init__(self, hold: bool = False):
        self.hold, self.forms, self.stops = hold, [], []
        self.first_row = threading.Event()

    def run(self, preset, overrides, form, on_plan, on_event, on_row, stop):
        self.forms.append(form)
        self.stops.append(stop)
        folder = Path("runs/walkforward-fake")  # a fixed name: snapshots show it
        on_plan("walk-forward, 3 folds (fake)", folder, 3)
        rows = []
        for fold, agent in enumerate(self.AGENT):
            if stop.is_set():
                rows.append({**fake_row(fold, "optimized", 0, agent), "status": "missing", "error": "not run"})
                for key in ("agent", "buy_and_hold", "flat", "best_constant", "trailing_rule", "trades", "no_edge"):
                    rows[-1].pop(key)
                continue
            for second in (1.0, 2.0):
                on_event(Progress("optimized", "training", elapsed_s=second, duration_s=4.0, episodes=8))
            rows.append(fake_row(fold, "optimized", 0, agent))
            on_row(rows[-1])
            self.first_row.set()
            if self.hold:
                stop.wait(timeout=20)
        return WalkForward(folder, {}, [], rows, summarize(rows), PBO)


async def open_study(pilot, app) -> WalkForwardScreen:
    await pilot.press("w")
    await wait_for(pilot, lambda: isinstance(app.screen, WalkForwardScreen))
    await pilot.pause()
    return app.screen


async def test_the_form_reaches_the_study_and_the_folds_fill_table_chart_aggregate_and_pbo(tmp_path):
    runner = FakeStudyRunner()
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#duration", Input).value = "4s"
        screen = await open_study(pilot, app)
        screen.runner = runner
        screen.query_one("#wf-train", Input).value = "3d"
        screen.query_one("#wf-test", Input).value = "1d"
        screen.query_one("#wf-seeds", Input).value = "2"
        screen.query_one("#wf-trainers", Select).value = "original,optimized"
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.study is not None)
        assert runner.forms == [StudyForm("3d", "1d", None, None, 2, "original,optimized", None)]
        assert screen.overrides["duration_s"] == 4.0 and screen.preset == "optimized"  # the main screen's controls
        folds = screen.query_one("#wf-folds", DataTable)
        assert folds.row_count == 3 and folds.get_row_at(1)[:2] == ["fold01", "0.00"]
        assert "no edge: flat" in folds.get_row_at(1)
        aggregate = screen.query_one("#wf-aggregate", DataTable).get_row_at(0)
        assert aggregate[0] == "optimized" and aggregate[4].startswith("[") and aggregate[2] == "0.27"  # mean of 1.2, 0, -0.4
        assert "0.25" in str(screen.query_one("#wf-pbo", Static).render())
        drawn = screen.query_one("#wf-chart", Chart).drawn
        assert drawn["optimized"] == [(1, 1.2), (2, 0.0), (3, -0.4)] and [y for _, y in drawn["buy-and-hold"]] == [0.5] * 3
        assert str(screen.query_one("#wf-status", StatusLine).render()).startswith("done")
        assert app.run_dirs[-1] == Path("runs/walkforward-fake")


async def test_folds_appear_while_the_study_runs_and_stop_stops_it(tmp_path):
    runner = FakeStudyRunner(hold=True)
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study(pilot, app)
        screen.runner = runner
        await pilot.press("s")
        await wait_for(pilot, runner.first_row.is_set)
        await wait_for(pilot, lambda: screen.query_one("#wf-folds", DataTable).row_count == 1)
        assert screen.running and "run 1 of 3: optimized" in str(screen.query_one("#wf-status", StatusLine).render())
        await pilot.press("x")
        await wait_for(pilot, lambda: not screen.running)
        assert runner.stops[0].is_set()
        status = str(screen.query_one("#wf-status", StatusLine).render())
        assert status.startswith("stopped") and "1 of 3 runs judged" in status
        assert screen.query_one("#wf-folds", DataTable).get_row_at(2)[1] == "missing"


async def test_a_bad_form_is_refused_and_leaving_a_running_study_asks_first(tmp_path):
    runner = FakeStudyRunner(hold=True)
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study(pilot, app)
        screen.runner = runner
        screen.query_one("#wf-cpcv", Input).value = "6"
        screen.action_start()
        await pilot.pause()
        assert not runner.forms and any("CPCV takes N,K" in n.message for n in app._notifications)
        screen.query_one("#wf-cpcv", Input).value = "6,2"
        screen.action_start()
        await wait_for(pilot, runner.first_row.is_set)
        assert runner.forms[0].cpcv == "6,2"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: len(app.screen_stack) == 1)  # stopped, then back on the main screen
        assert runner.stops[0].is_set()


async def test_a_tiny_real_study_ends_with_its_folds_and_aggregate(tmp_path):
    tiny = {k: v for k, v in TINY_RUN.items() if k != "duration_s"}
    save_user_preset("tiny", load_config(None, {**tiny, "max_episodes": 16, "duration_s": 60, "validation_series": 0}))
    app = AsymApp(out_dir=str(tmp_path), preset="tiny", data=TINY_RUN["data"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study(pilot, app)
        screen.query_one("#wf-train", Input).value = "3d"
        screen.query_one("#wf-test", Input).value = "2d"
        await pilot.press("s")
        await wait_for(pilot, lambda: not screen.running and screen.study is not None, 240)
        rows = [row for row in screen.study.rows if "agent" in row]
        assert len(rows) == 2 and screen.query_one("#wf-folds", DataTable).row_count == 2
        assert screen.query_one("#wf-aggregate", DataTable).get_row_at(0)[1] == "2 × 1"
        assert (screen.study.folder / "walkforward.csv").is_file()
        assert "spot-taker" in str(screen.query_one("#wf-settings", Static).render())  # the fee model heads the study
