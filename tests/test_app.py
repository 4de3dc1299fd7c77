"""Pilot-driven tests of the real app; a fake runner for pure-UI behaviour, the real engine for one run."""

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Checkbox

from asym_tui.app import AsymApp
from asym_tui.screens import ComparisonScreen, ConfirmScreen, HistoryScreen
from asym_tui.widgets import KeyNumber
from conftest import TINY_RUN
from engine.compare import comparison_of
from engine.config import load_config, save_user_preset
from engine.events import LogMessage, Progress, RunSummary

SIZE = (120, 40)


def fake_summary(trainer, episodes_per_min, sharpe) -> RunSummary:
    metrics = lambda s: {"sharpe": s, "total_return": 0.01, "max_drawdown": -0.05, "sortino": 1.0, "trades": 3,
                         "win_rate": 0.5, "exposure": 0.5, "cagr": 0.1, "volatility": 0.2, "calmar": 1.0}
    return RunSummary.from_json({"trainer": trainer, "algorithm": "reinforce" if trainer == "original" else "ppo", "status": "completed", "stop_reason": "duration reached", "device_label": "CPU",
            "throughput": {"episodes_per_min": episodes_per_min, "steps_per_s": episodes_per_min * 8, "episodes": 100,
                           "optimizer_steps": int(episodes_per_min), "optimizer_steps_per_s": episodes_per_min / 60},
            "resources": {"utilisation_mean": 50.0, "peak_memory_mb": 500.0}, "final_portfolio": 10_100.0,
            "test": {"agent": metrics(sharpe), "buy_and_hold": metrics(-1.0), "flat": metrics(0.0), "random": metrics(-9.0)},
            "validation": {"agent": metrics(sharpe)},
            "learning": {"time_to_quality_s": 60 / sharpe, "quality_target": 8.0,
                         "validations": [{"elapsed_s": 10.0 * i, "val_score": sharpe * i * 4} for i in range(1, 7)],
                         "unseen": {"agent_sharpe": sharpe * 10, "trailing_rule_sharpe": 14.0}}})


@dataclass
class FakeOutcome:
    run_dir: Path
    summary: RunSummary


class FakeRunner:
    """Emits progress until its event budget or the stop signal; records the configs it receives. With
    `hold`, it emits its events, then waits for the stop signal (a run frozen mid-way, for snapshots)."""

    def __init__(self, events: int = 5, until_stopped: bool = False, hold: bool = False, phase: str = "training", no_edge: bool = False,
                 diagnostics: dict | None = None):
        self.events, self.until_stopped, self.hold, self.phase, self.configs = events, until_stopped, hold, phase, []
        self.no_edge, self.diagnostics = no_edge, diagnostics or {}  # diagnostics: PPO's Progress fields to report
        self.started, self.emitted = threading.Event(), threading.Event()

    def _emit(self, trainer, on_event, stop):
        self.started.set()
        i = 0
        while (self.until_stopped or i < self.events) and not stop.is_set():
            i += 1
            on_event(Progress(trainer, self.phase, elapsed_s=i * 6.0, duration_s=120.0, episodes=64 * i, env_steps=32_000 * i, episodes_per_min=1234.0,
                              steps_per_s=9876.0, train_sharpe=1.5, portfolio=10_250.0, macro_updates=i, micro_updates=10 * i,
                              optimizer_steps_per_s=12.5, device_label="CPU", utilisation=42.0, memory_used_mb=2048.0, val_sharpe=0.8, val_score=0.6, val_drawdown=-0.04,
                              val_portfolio=10_300.0, **self.diagnostics))
            time.sleep(0.01)
        self.emitted.set()
        if self.hold:
            stop.wait(timeout=20)  # a frozen run still ends if nobody stops it
        on_event(LogMessage("warning", "fake warning from the engine"))
        summary = fake_summary(trainer, 100.0 if trainer == "original" else 5000.0, 1.0)
        if self.no_edge:
            summary.selected_model = {"no_edge": True, "verdict": "no edge found on validation: holding flat"}
        return FakeOutcome(Path("runs/fake"), summary)

    def train(self, config, on_event, stop):
        self.configs.append(config)
        return (self._emit(config.trainer, on_event, stop),)

    def compare(self, config, on_event, stop, seeds=1):
        self.configs.append(config)
        return comparison_of([self._emit("original", on_event, stop).summary], [self._emit("optimized", on_event, stop).summary])


async def wait_for(pilot, condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the app"
        await pilot.pause(0.05)


async def test_choosing_a_preset_fills_the_controls(tmp_path):
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#preset", Select).value = "debug"
        await pilot.pause()
        assert app.query_one("#num_envs", Input).value == "16"
        assert app.query_one("#duration", Input).value == "60s"
        assert app.query_one("#amp", Checkbox).value is False
        app.query_one("#preset", Select).value = "original"
        await pilot.pause()
        assert app.query_one("#trainer", Select).value == "original"
        assert app.query_one("#num_envs", Input).disabled


async def test_toggles_and_num_envs_reach_the_trainer(tmp_path):
    runner = FakeRunner()
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#amp")
        await pilot.click("#compile")
        app.query_one("#num_envs", Input).value = "24"
        app.query_one("#duration", Input).value = "2m"
        await pilot.click("#start")
        await wait_for(pilot, lambda: runner.configs and not app.running)
        config = runner.configs[0]
        assert (config.use_amp, config.compile_model, config.num_envs, config.duration_s) == (True, True, 24, 120.0)
        assert config.out_dir == str(tmp_path) and config.preset == "optimized"  # the recommended preset on a CPU


@pytest.mark.parametrize("value", ["0", "100000"])
async def test_invalid_num_envs_is_refused_with_a_message(tmp_path, value):
    runner = FakeRunner()
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#num_envs", Input).value = value
        await pilot.press("escape")
        app.action_start()
        await pilot.pause()
        assert not runner.configs and not app.running
        assert any("num_envs must be 1–4,096 on cpu" in n.message for n in app._notifications)


async def test_progress_shows_in_key_numbers_and_charts_and_no_gpu_shows_cpu(tmp_path):
    app = AsymApp(runner=FakeRunner(events=8), out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        app.action_start()
        await wait_for(pilot, lambda: not app.running)
        await pilot.pause(0.4)
        assert app.query_one("#key-episodes-min", KeyNumber).figure == "5,000"  # the finished run's figure
        assert app.query_one("#key-device", KeyNumber).heading.startswith("CPU %")
        assert app.query_one("#key-device", KeyNumber).figure == "50%"
        assert len(app.series["optimized"].seconds) == 8
        assert app.query_one("#chart-device").title == "CPU use (%)"


async def test_compare_ends_with_the_comparison_table(tmp_path):
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        app.action_compare()
        await wait_for(pilot, lambda: isinstance(app.screen, ComparisonScreen) and any(t.row_count for t in app.screen.query(DataTable)))
        table = app.screen.query_one("#comparison", DataTable)
        rows = {table.get_row_at(i)[0]: table.get_row_at(i) for i in range(table.row_count)}
        assert rows["episodes/min"][1:] == ["100.00", "5,000.00", "optimized (ppo)"]
        assert rows["speedup (episodes/min)"][1] == "1.0×"
        assert rows["episodes"][1:3] == ["100", "100"] and rows["optimizer steps"][2] == "5,000"  # counts are whole
        assert rows["speedup (episodes/min)"][2] == "50.0×"
        assert set(app.series) == {"original", "optimized"}


async def test_quit_during_a_run_asks_then_stops_cleanly(tmp_path):
    runner = FakeRunner(until_stopped=True)
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        app.action_start()
        await wait_for(pilot, runner.started.is_set)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.running
        await pilot.press("y")
        await wait_for(pilot, lambda: app.stop_event.is_set() and not app.running, 10)
    assert app.return_code == 0


async def test_engine_errors_are_notifications_not_crashes(tmp_path):
    app = AsymApp(out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#data", Input).value = str(tmp_path / "missing.csv")
        app.action_start()
        await wait_for(pilot, lambda: not app.running and app._notifications)
        assert any("missing.csv: no such file" in n.message for n in app._notifications)


def write_fake_run(folder: Path, trainer: str, sharpe: float):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": {"trainer": trainer}, "created": folder.name}))
    (folder / "summary.json").write_text(json.dumps(fake_summary(trainer, 100.0, sharpe).to_json()))


async def test_history_lists_runs_and_compares_two(tmp_path):
    write_fake_run(tmp_path / "2024-a", "original", 0.5)
    write_fake_run(tmp_path / "sweep-1" / "trial-0", "optimized", 1.5)
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("h")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and any(t.row_count for t in app.screen.query(DataTable)))
        table = app.screen.query_one(DataTable)
        assert table.row_count == 2
        assert {table.get_row_at(i)[1] for i in range(2)} == {"2024-a", "sweep-1/trial-0"}
        await pilot.press("space", "down", "space", "c")
        await pilot.pause()
        assert isinstance(app.screen, ComparisonScreen)


async def test_save_preset_from_the_app(tmp_path):
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#num_envs", Input).value = "48"
        app.action_save_preset()
        await pilot.pause()
        await pilot.press(*"mine", "enter")
        await pilot.pause()
        assert app.query_one("#preset", Select).value == "mine"
        assert load_config("mine").num_envs == 48


async def test_real_engine_start_then_stop_leaves_a_valid_run_folder(tmp_path):
    tiny = {k: v for k, v in TINY_RUN.items() if k not in ("max_episodes",)}
    save_user_preset("tiny", load_config(None, {**tiny, "duration_s": 120, "progress_every_s": 0.05}))
    app = AsymApp(out_dir=str(tmp_path / "runs"), preset="tiny", data=TINY_RUN["data"])
    async with app.run_test(size=SIZE) as pilot:
        app.action_start()
        await wait_for(pilot, lambda: app.latest is not None and app.latest.episodes >= 16, 60)
        await pilot.pause(0.3)
        assert app.query_one("#key-episodes-min", KeyNumber).figure != "—"
        await pilot.click("#stop")
        await wait_for(pilot, lambda: not app.running, 60)
    run_dirs = [p.parent for p in (tmp_path / "runs").glob("*/summary.json")]
    assert len(run_dirs) == 1
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    assert summary["status"] == "stopped" and "test" in summary
    assert (run_dirs[0] / "checkpoint.pt").is_file()


async def test_doctor_screen_shows_the_machine_facts(tmp_path):
    from asym_tui.screens import DoctorScreen
    from textual.widgets import Static
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        assert "recommended preset: optimized" in app.sub_title
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DoctorScreen))
        screen = app.screen
        await wait_for(pilot, lambda: screen.facts is not None, 120)
        assert screen.facts["device"] == "cpu" and screen.facts["recommended_preset"] == "optimized"
        assert {p["name"] for p in screen.facts["probes"]} == {"bfloat16 autocast", "float16 autocast", "torch.compile"}
        assert "Probing" not in str(screen.query_one("#doctor-facts", Static).render())


async def test_the_fee_level_and_shorts_reach_the_run_config_and_the_status_line(tmp_path):
    runner = FakeRunner(events=2)
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        assert app.query_one("#fees", Select).value == "spot-taker"  # the preset's costs are the default venue level
        app.query_one("#fees", Select).value = "perp-maker"
        app.query_one("#shorts", Checkbox).value = False
        app.action_start()
        await wait_for(pilot, lambda: runner.configs and not app.running)
        await pilot.pause(0.3)
        config = runner.configs[0]
        assert (config.commission, config.slippage, config.allow_short) == (0.0002, 0.0, False)
        assert "perp-maker, no shorts" in str(app.query_one("#status").render())
        assert any("long or flat only" in line.text for line in app.query_one("#log").lines)


async def test_a_preset_with_its_own_costs_keeps_them(tmp_path):
    save_user_preset("cheap", load_config(None, {"commission": 0.0003, "slippage": 0.0001}))
    runner = FakeRunner(events=1)
    app = AsymApp(runner=runner, out_dir=str(tmp_path), preset="cheap")
    async with app.run_test(size=SIZE) as pilot:
        assert app.query_one("#fees", Select).value == "preset"
        app.action_start()
        await wait_for(pilot, lambda: runner.configs and not app.running)
        assert (runner.configs[0].commission, runner.configs[0].slippage) == (0.0003, 0.0001)


async def test_the_verdict_of_a_seeded_comparison_is_in_view_at_120x40_without_scrolling(tmp_path):
    from test_snapshots import seeded_comparison

    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(ComparisonScreen(seeded_comparison()))
        await pilot.pause(0.3)
        screen = app.screen
        dialog = screen.query_one("#dialog")
        assert dialog.scroll_y == 0 and dialog.region.bottom <= 40
        for part in ("#seed-chart", "#verdict", "#improvement"):
            region = screen.query_one(part).region
            assert region.height and dialog.content_region.contains_region(region), (part, region)
        verdict = screen.query_one("#verdict", DataTable)
        assert verdict.row_count == 2 and verdict.get_row_at(1)[1] == "1.20, 0.90, 1.50"
        assert "P(optimized (ppo) > original)" in str(screen.query_one("#improvement").render())


async def test_every_control_and_the_compare_seeds_are_reachable_at_80x24(tmp_path):
    runner = FakeRunner()
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        fields = app.query_one("#fields").region
        for control in ("#preset", "#trainer", "#algorithm", "#amp", "#compile", "#fees", "#shorts", "#num_envs", "#duration", "#data", "#seeds"):
            region = app.query_one(control).region
            assert region.height == 1 and fields.contains_region(region), (control, region, fields)
        seeds = app.query_one("#seeds", Input)
        assert seeds.region.width >= 8
        seeds.value = "3"
        app.action_compare()
        # until the screen has mounted and filled its tables: the app must not close under its on_mount
        await wait_for(pilot, lambda: isinstance(app.screen, ComparisonScreen) and any(t.row_count for t in app.screen.query(DataTable)))
        assert app.seeds == 3
