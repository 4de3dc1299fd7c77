"""Snapshot tests of the main screen mid-run and after a finished run at 80×24, 100×30 and 160×50, and of
the comparison screen (SVG under tests/__snapshots__; update with --snapshot-update, then look at them)."""

from datetime import datetime

import pytest

from asym_tui.app import AsymApp
from asym_tui.screens import ComparisonScreen
from engine.compare import comparison_of
from test_app import FakeRunner, fake_summary, wait_for
from test_ui_truth import PPO_DIAGNOSTICS

SIZES = [(80, 24), (100, 30), (160, 50)]


def make_app(tmp_path, runner) -> AsymApp:
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    app.clock = lambda: datetime(2026, 1, 1, 12, 0, 0)  # fixed log timestamps
    return app


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_main_screen_mid_run(snap_compare, tmp_path, size):
    runner = FakeRunner(events=8, hold=True, diagnostics=PPO_DIAGNOSTICS)  # a PPO run: its diagnostics line, one hint

    async def mid_run(pilot):
        pilot.app.action_start()
        await wait_for(pilot, runner.emitted.is_set)
        await pilot.pause(0.6)

    assert snap_compare(make_app(tmp_path, runner), terminal_size=size, run_before=mid_run)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_main_screen_after_a_finished_run(snap_compare, tmp_path, size):
    async def finished(pilot):
        pilot.app.action_start()
        await wait_for(pilot, lambda: pilot.app.finished)
        await pilot.pause(0.6)

    assert snap_compare(make_app(tmp_path, FakeRunner(events=8)), terminal_size=size, run_before=finished)


def seeded_comparison():
    """Three seeds a side, as `compare --seeds 3` gives."""
    side = lambda trainer, rate, sharpes: [fake_summary(trainer, rate, sharpe) for sharpe in sharpes]
    summaries = side("original", 100.0, (0.4, 0.2, 0.7)), side("optimized", 5000.0, (1.2, 0.9, 1.5))
    for seed, (left, right) in enumerate(zip(*summaries)):
        left.seed = right.seed = seed
    return comparison_of(*summaries)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_comparison_screen(snap_compare, tmp_path, size):
    async def show_table(pilot):
        pilot.app.push_screen(ComparisonScreen(seeded_comparison()))
        await pilot.pause()

    assert snap_compare(make_app(tmp_path, FakeRunner()), terminal_size=size, run_before=show_table)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_walkforward_screen_after_a_study(snap_compare, tmp_path, size):
    from asym_tui.walkforward_screen import WalkForwardScreen
    from test_app_walkforward import FakeStudyRunner

    async def studied(pilot):
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, WalkForwardScreen))
        screen = pilot.app.screen
        screen.runner = FakeStudyRunner()
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.study is not None)
        await pilot.pause(0.3)

    assert snap_compare(make_app(tmp_path, FakeRunner()), terminal_size=size, run_before=studied)
