"""The app and the command line tell the truth at a glance (issue 11): one test per point, Pilot for the
app, subprocesses with COLUMNS=80 for the command line."""

import os
import re
import subprocess
import sys

import psutil
import pytest
import torch
from rich.console import Console
from rich.text import Text
from textual.widgets import Button, RichLog, Static

from asym_tui.app import AsymApp
from asym_tui.screens import ConfirmScreen, DoctorScreen, HelpScreen, HistoryScreen, RunDetailScreen
from asym_tui.tables import bench_table, sweep_table
from asym_tui.charts import Chart
from asym_tui.widgets import KeyNumber, Series, StatusLine
from engine.config import preset_description
from engine.doctor import recommended_preset
from engine.events import Progress
from engine.monitor import DeviceMonitor
from engine.runs import execute_run
from test_app import FakeRunner, wait_for, write_fake_run


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def status_text(app) -> str:
    return str(app.query_one(StatusLine).render())


# --- 2: the end of a run --------------------------------------------------------------------------

async def test_a_finished_run_shows_its_labelled_test_result_phase_done_and_its_folder(tmp_path):
    app = AsymApp(runner=FakeRunner(events=3), out_dir=str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        app.action_start()
        await wait_for(pilot, lambda: not app.running and app.finished)
        await pilot.pause(0.3)
        sharpe = app.query_one("#key-Sharpe", KeyNumber)
        assert (sharpe.figure, sharpe.source) == ("1.00", "test")  # the summary's test Sharpe, not the last validation
        assert app.query_one("#key-portfolio", KeyNumber).figure == "$10.1k"
        assert status_text(app).startswith("done") and "optimized completed" in status_text(app)
        assert any(n.title == "optimized run saved" and "runs/fake" in n.message for n in app._notifications)
        assert "Run folder: runs/fake" in screen_text(app)
        assert [str(path) for path in app.run_dirs] == ["runs/fake"]


# --- 3: progress and stage ------------------------------------------------------------------------

async def test_compare_shows_the_stage_and_time_left_against_the_duration(tmp_path):
    runner = FakeRunner(events=2, hold=True)
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        app.action_compare()
        await wait_for(pilot, runner.emitted.is_set)
        await pilot.pause(0.4)
        assert "1 of 2: original" in status_text(app)
        assert "0:12/2:00, 1:48 left" in status_text(app)
        app.action_stop()
        await wait_for(pilot, lambda: not app.running)


# --- 4: compilation is shown, and kept out of throughput --------------------------------------------

async def test_compiling_shows_its_elapsed_seconds(tmp_path):
    runner = FakeRunner(events=1, hold=True, phase="compiling")
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        app.action_start()
        await wait_for(pilot, runner.emitted.is_set)
        await pilot.pause(1.3)
        text = status_text(app)
        assert text.startswith("compiling ") and int(text.split()[1]) >= 1, text
        app.action_stop()
        await wait_for(pilot, lambda: not app.running)


def test_warm_up_is_timed_apart_and_train_s_never_doubles(tiny_config, tiny_splits):
    events = []
    outcome = execute_run(tiny_config(compile_model=True, compile_backend="eager", max_episodes=48), on_event=events.append,
                          splits=tiny_splits)
    phases = [e.phase for e in events if isinstance(e, Progress)]
    assert phases[0] == "compiling" and "training" in phases
    throughput = outcome.summary.throughput
    assert throughput.warmup_s > 0 and throughput.train_s > 0
    assert throughput.elapsed_s >= throughput.train_s + throughput.warmup_s
    last_row = outcome.result.history[-1]  # the final validation's row
    assert last_row["train_s"] == pytest.approx(throughput.train_s)


# --- 5: resource figures are this process's -------------------------------------------------------

def test_cpu_readings_are_this_process_not_the_machine():
    reading = DeviceMonitor(torch.device("cpu")).read()
    rss = psutil.Process(os.getpid()).memory_info().rss / 2**20
    assert reading.memory_used_mb == pytest.approx(rss, rel=0.2)
    assert reading.memory_used_mb < psutil.virtual_memory().total / 2**20 - psutil.virtual_memory().available / 2**20 or rss > 1e5
    assert reading.utilisation is not None and 0 <= reading.utilisation <= 100
    assert reading.peak_allocated_mb >= reading.memory_used_mb


async def test_device_use_is_drawn_on_a_fixed_0_to_100_axis(tmp_path):
    app = AsymApp(runner=FakeRunner(events=6), out_dir=str(tmp_path))
    async with app.run_test(size=(160, 50)) as pilot:
        app.action_start()
        await wait_for(pilot, lambda: not app.running)
        await pilot.pause(0.3)
        chart = app.query_one("#chart-device", Chart)
        labels = [line.split("┤")[0].strip() for line in screen_text(app).splitlines() if "┤" in line]
        assert chart.drawn["optimized"][0][1] == 42.0
        assert "100.0" in " ".join(labels) and any(label.endswith("0.0") for label in labels)


# --- 6: readable charts ---------------------------------------------------------------------------

async def test_charts_use_log_scale_for_tenfold_throughput_and_name_runs_in_legends(tmp_path):
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=(160, 50)) as pilot:
        slow, fast = Series(), Series()
        for i in range(1, 5):
            slow.add(Progress("original", "training", elapsed_s=10.0 * i, episodes=i, episodes_per_min=23.0))
            fast.add(Progress("optimized", "training", elapsed_s=10.0 * i, episodes=100 * i, episodes_per_min=1360.0))
        app.series = {"original": slow, "optimized": fast}
        app.dirty = True
        app.latest = Progress("optimized", "training", elapsed_s=40.0)
        app.redraw()
        await pilot.pause()
        chart = app.query_one("#chart-throughput", Chart)
        assert "log scale" in chart.title
        assert "original" in chart.border_subtitle and "optimized" in chart.border_subtitle
        assert "seconds" in screen_text(app)  # a 40 s run is in seconds, not fractions of a minute


async def test_run_history_charts_start_at_the_first_real_point(tmp_path):
    folder = tmp_path / "run-a"
    write_fake_run(folder, "optimized", 1.0)
    (folder / "metrics.csv").write_text("phase,elapsed_s,episodes,episodes_per_min,train_sharpe,val_sharpe,portfolio\n"
                                        "training,0.1,0,0,0,,10000\ntraining,5,64,900,1.0,,10100\ntraining,10,128,950,1.2,0.5,10200\n")
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("h")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        await pilot.pause()
        throughput = app.screen.query_one("#detail-throughput", Chart).drawn["optimized"]
        assert throughput[0] == (5.0, 900.0)


# --- 7: nothing cut -------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_key_number_titles_and_log_lines_are_whole(tmp_path, size):
    runner = FakeRunner(events=3, hold=True)
    app = AsymApp(runner=runner, out_dir=str(tmp_path / "a-rather-long-folder-name-for-runs"))
    async with app.run_test(size=size) as pilot:
        app.action_start()
        await wait_for(pilot, runner.emitted.is_set)
        await pilot.pause(0.4)
        text = screen_text(app)
        for card in app.query(KeyNumber):
            assert card.heading in text and "…" not in str(card.render())
        log = app.query_one("#log", RichLog)
        assert log.virtual_size.width <= log.size.width  # wrapped to the pane, never a 78-column line cut off
        assert all(line.text[:8].count(":") == 2 for line in log.lines if line.text[:2].isdigit())  # HH:MM:SS
        app.action_stop()
        await wait_for(pilot, lambda: not app.running)


async def test_the_log_expands_and_below_the_minimum_size_the_app_says_so(tmp_path):
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("l")
        assert app.screen.maximized is app.query_one("#log")
        await pilot.press("l")
        assert app.screen.maximized is None
    async with AsymApp(runner=FakeRunner(), out_dir=str(tmp_path)).run_test(size=(70, 20)) as pilot:
        app = pilot.app
        await pilot.pause()
        assert "needs a terminal of at least 80×24; this one is 70×20" in screen_text(app)
        assert not app.query_one("#body").display


# --- 8: discoverable --------------------------------------------------------------------------------

async def test_question_mark_lists_every_key_and_dialogs_show_theirs(tmp_path):
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for words in ("Start", "Stop", "Compare", "History", "Doctor", "Show/hide controls", "Show/hide log", "Expand or restore the log"):
            assert words in text
        await pilot.press("escape")
        app.push_screen(ConfirmScreen("Really?"))
        await pilot.pause()
        assert [str(b.label) for b in app.screen.query(Button)] == ["Yes (y)", "No (n)"]


async def test_main_screen_keys_do_not_fire_on_other_screens(tmp_path):
    runner = FakeRunner()
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("h")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await pilot.press("s", "h", "d")
        await pilot.pause(0.2)
        assert not runner.configs and not app.running
        assert len(app.screen_stack) == 2


async def test_doctor_is_centred_presets_are_described_and_the_recommended_one_is_selected(tmp_path):
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        recommended = recommended_preset(app.device)
        assert str(app.query_one("#preset").value) == recommended and f"recommended preset: {recommended}" in app.sub_title
        assert str(app.query_one("#preset-description", Static).render()) == preset_description(recommended)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DoctorScreen))
        await pilot.pause()
        dialog = app.screen.query_one("#dialog").region
        assert abs(dialog.x - (120 - dialog.right)) <= 1
        await pilot.press("escape")


# --- 9: command-line tables at 80 columns ------------------------------------------------------------

def narrow(renderable) -> list[str]:
    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    console.print(renderable)
    return console.export_text().splitlines()


def test_bench_and_sweep_tables_fit_80_columns_without_cut_numbers():
    result = {"label": "optimized · 4096 envs · AMP · compile", "error": "", "episodes_per_min": 1_234_567.0, "steps_per_s": 10_288_058.0,
              "optimizer_steps_per_s": 4.6, "rollout_s": 0.1, "update_s": 0.9, "warmup_s": 3.2, "peak_host_mb": 900.0,
              "peak_device_mb": None, "ratio": 1232.4}
    report = {"machine": {"processor": "AMD EPYC", "device": "cpu", "torch": "2.13.0"}, "episode_steps": 500, "results": [result]}
    lines = narrow(bench_table(report, 80))
    assert max(map(len, lines)) <= 80 and not any("…" in line for line in lines)
    assert any("1,234,567" in line and "1,232.4×" in line for line in lines)
    row = {"trial": "trial-000", "seed": 0, "status": "completed", "error": "", "episodes_per_min": 9_999.0, "steps_per_s": 99_999.0,
           "val_score": 12.34, "val_sharpe": 11.0, "test_sharpe": 10.5, "test_max_drawdown": -0.1, "test_return": 0.25,
           "num_envs": 128, "lr_micro": 0.0003}
    lines = narrow(sweep_table([row], ["num_envs", "lr_micro"], "Sweep", 80))
    assert max(map(len, lines)) <= 80 and not any("…" in line for line in lines)
    assert any("12.34" in line and "+25.00%" in line and "0.0003" in line for line in lines)


def test_train_at_80_columns_prints_whole_numbers_and_the_run_folder(tmp_path):
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    flags = ["--data", "synthetic:days=8,seed=3", "--set", "macro_window=64", "--set", "micro_window=16", "--set", "episode_steps=32",
             "--num-envs", "8", "--episodes", "16", "--set", "unseen_series=0", "--out", str(tmp_path), "--quiet", "--no-compile"]
    done = subprocess.run([sys.executable, "-m", "asym_tui.cli", "train", "--preset", "debug", *flags], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    tables = [line for line in lines if not line.startswith("Run folder: ")]  # a path is printed whole; the terminal wraps it
    assert max(map(len, tables)) <= 80 and not any("…" in line for line in lines)
    assert any(line.startswith("Run folder: ") and str(tmp_path) in line for line in lines)


# --- issue 21 point 14 and issue 18: whole titles at 80×24, a log that reflows, honest "no edge" --------

def border_texts(app) -> list[str]:
    return [text for chart in app.query(Chart) if chart.display for text in (str(chart.border_title), chart.border_subtitle)]


async def test_chart_titles_and_legends_fit_their_borders_at_80x24(tmp_path):
    runner = FakeRunner(events=3, hold=True)
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        app.series = {"original": Series(), "optimized": Series()}
        for trainer in app.series:
            for i in range(1, 4):
                app.series[trainer].add(Progress(trainer, "training", elapsed_s=i, episodes=i, episodes_per_min=10.0 ** i, train_sharpe=1.0,
                                                 val_score=float(i)))
        app.dirty, app.latest = True, Progress("optimized", "training", elapsed_s=3.0)
        app.redraw()
        await wait_for(pilot, lambda: "q Quit" in screen_text(app))  # the footer draws last; on a busy machine, later
        text = screen_text(app)
        for chart in app.query(Chart):
            if chart.display:
                assert len(Text.from_markup(chart.border_subtitle).plain) <= chart.size.width - 4
                assert str(chart.border_title) in text and len(str(chart.border_title)) <= chart.size.width - 4
        assert "…" not in "".join(line for line in text.splitlines() if "╭" in line or "╰" in line)
        assert "opt" in Text.from_markup(app.query_one("#chart-sharpe", Chart).border_subtitle).plain
        assert "w Walk-forward" in text and "q Quit" in text  # the footer's keys, whole


async def test_the_log_wraps_again_after_a_resize_and_when_expanded(tmp_path):
    app = AsymApp(runner=FakeRunner(), out_dir=str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        app.log_line("a long line " * 30)
        await pilot.pause()
        log = app.query_one("#log", RichLog)
        narrow_lines = len(log.lines)
        await pilot.press("l")
        await pilot.pause()
        assert len(log.lines) < narrow_lines  # wider: fewer wrapped lines, not the old width
        assert log.virtual_size.width <= log.scrollable_content_region.width
        await pilot.press("l")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert len(log.lines) > narrow_lines and log.virtual_size.width <= log.scrollable_content_region.width


async def test_the_end_of_run_notification_leaves_the_log_in_view(tmp_path):
    from textual.widgets._toast import Toast

    app = AsymApp(runner=FakeRunner(events=2), out_dir=str(tmp_path))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        app.action_start()
        await wait_for(pilot, lambda: app.finished and list(app.screen.query(Toast)))
        await pilot.pause(0.3)
        log = app.query_one("#log").region
        for toast in app.screen.query(Toast):
            assert not toast.region.overlaps(log), (toast.region, log)


async def test_a_run_without_edge_says_flat_instead_of_figures(tmp_path):
    app = AsymApp(runner=FakeRunner(events=2, no_edge=True), out_dir=str(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        app.action_start()
        await wait_for(pilot, lambda: app.finished)
        await pilot.pause(0.3)
        for card in ("portfolio", "return", "Sharpe", "max-DD"):
            number_card = app.query_one(f"#key-{card}", KeyNumber)
            assert (number_card.figure, number_card.source) == ("flat", "no edge")
        assert "flat (no edge)" in status_text(app)
        assert "no edge found on validation: holding flat" in screen_text(app)


PPO_DIAGNOSTICS = {"approx_kl": 0.08, "clip_fraction": 0.12, "entropy": 1.02, "explained_variance": 0.4, "policy_loss": -0.01,
                   "value_loss": 0.2, "learning_rate": 3e-4}


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_ppo_diagnostics_show_with_a_hint_when_out_of_range(tmp_path, size):
    runner = FakeRunner(events=3, hold=True, diagnostics=PPO_DIAGNOSTICS)
    app = AsymApp(runner=runner, out_dir=str(tmp_path))
    async with app.run_test(size=size) as pilot:
        app.action_start()
        await wait_for(pilot, runner.emitted.is_set)
        await pilot.pause(0.6)
        card = str(app.query_one("#diagnostics").render())
        assert "KL 0.080" in card and "clip 0.12" in card
        hint = "approx KL 0.080 > 0.05"
        assert (hint in card) == (size[1] >= 40) and ("1 out of range" in card) == (size[1] < 40)
        log = [line.text for line in app.query_one("#log", RichLog).lines]
        assert sum("diagnostics: approx KL" in line for line in log) == 1  # once, not at every redraw
        app.action_stop()
        await wait_for(pilot, lambda: not app.running)


# --- issue 21 point 4: the command line's progress bar at 80 columns -----------------------------------

def long_progress(trainer: str) -> Progress:
    return Progress(trainer, "training", elapsed_s=14.2, duration_s=10.0, episodes=244_000, val_score=13.812, train_sharpe=13.87,
                    steps_per_s=1_234_567.0, optimizer_steps_per_s=33.3)


def test_the_progress_bar_at_80_columns_keeps_bar_and_percentage_and_drops_whole_fields():
    import io

    from asym_tui.console import progress_display

    console = Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None)
    with progress_display(console, False, ["original", "optimized"]) as on_event:
        on_event(long_progress("original"))
        on_event(long_progress("optimized"))
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())  # the frames, without cursor moves
    lines = [line for line in re.split(r"[\r\n]", drawn) if "training" in line]
    assert lines and all("━" in line and "%" in line and len(line) <= 80 and "…" not in line for line in lines)
    final = lines[-1].split("·")
    assert final[0].rstrip().endswith("training") and all(field.strip()[-1].isalpha() for field in final)  # no number cut


def test_the_progress_bar_leaves_no_line_above_the_summary():
    import io

    from asym_tui.console import progress_display

    console = Console(width=80, file=io.StringIO(), force_terminal=False)
    with progress_display(console, False, ["optimized"]) as on_event:
        on_event(long_progress("optimized"))
    console.print("summary")
    assert console.file.getvalue().strip() == "summary"  # no "0:14/0:10" left over from the last update
