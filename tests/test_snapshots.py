"""Snapshot tests of the main screens (SVG under tests/__snapshots__; update with --snapshot-update)."""

from asym_tui.app import AsymApp
from asym_tui.screens import ComparisonScreen
from test_app import FakeRunner, fake_summary

SIZE = (120, 40)


def test_main_screen(snap_compare, tmp_path):
    assert snap_compare(AsymApp(runner=FakeRunner(), out_dir=str(tmp_path)), terminal_size=SIZE)


def test_comparison_screen(snap_compare, tmp_path):
    async def show_table(pilot):
        pilot.app.push_screen(ComparisonScreen(fake_summary("original", 100.0, 0.4), fake_summary("optimized", 5000.0, 1.2)))
        await pilot.pause()

    assert snap_compare(AsymApp(runner=FakeRunner(), out_dir=str(tmp_path)), terminal_size=SIZE, run_before=show_table)
