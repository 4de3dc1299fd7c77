"""The asym-tui application: pick a preset, train, watch, compare, browse history.

Training runs in a thread worker that only posts messages; the screen redraws from a 4 Hz timer, so
thousands of events per second never freeze it. The engine is reached through a runner object
(`EngineRunner` by default; tests can pass a fake one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Input, RichLog, Select, Static

from asym_tui.screens import ComparisonScreen, ConfirmScreen, DoctorScreen, HelpScreen, HistoryScreen, SavePresetScreen
from asym_tui.tables import comparison_title, result_text, stage_text
from asym_tui.widgets import ChartGrid, ControlPanel, KeyNumbers, Series, StatusLine
from engine.config import ConfigError, RunConfig, load_config, parse_duration, preset_description, preset_paths, save_user_preset
from engine.errors import UserError
from engine.events import LogMessage, Progress
from engine.monitor import resolve_device

REDRAW_SECONDS = 0.25
MIN_SIZE = (80, 24)  # below this the controls cannot all be seen: the app says so instead
TALL = 40  # from this many rows the four charts show; below, the first two
MAIN_SCREEN_ACTIONS = {"start", "stop", "compare", "history", "save_preset", "doctor", "toggle", "toggle_log"}


class EngineRunner:
    """The real engine: one run, or original then optimized."""

    def train(self, config: RunConfig, on_event: Callable, stop: threading.Event):
        from engine.runs import execute_run

        return (execute_run(config, on_event=on_event, stop=stop),)

    def compare(self, config: RunConfig, on_event: Callable, stop: threading.Event, seeds: int = 1):
        from engine.compare import run_comparison

        return run_comparison(config, seeds, on_event=on_event, stop=stop)


class EngineEvent(Message):
    """A progress event or log message from the training thread."""

    def __init__(self, event: Progress | LogMessage):
        super().__init__()
        self.event = event


class RunFinished(Message):
    def __init__(self, outcomes: tuple, error: str | None, comparison=None):
        super().__init__()
        self.outcomes, self.error, self.comparison = outcomes, error, comparison


class AsymApp(App):
    TITLE = "asym-tui"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("s", "start", "Start", id="start"),
        Binding("x", "stop", "Stop", id="stop"),
        Binding("c", "compare", "Compare", id="compare"),
        Binding("h", "history", "History", id="history"),
        Binding("p", "save_preset", "Save the settings as a preset", id="save_preset", show=False),
        Binding("d", "doctor", "Doctor", id="doctor"),
        Binding("1", "toggle('controls')", "Show/hide controls", id="toggle_controls", show=False),
        Binding("2", "toggle('numbers')", "Show/hide numbers", id="toggle_numbers", show=False),
        Binding("3", "toggle('charts')", "Show/hide charts", id="toggle_charts", show=False),
        Binding("4", "toggle('log')", "Show/hide log", id="toggle_log_panel", show=False),
        Binding("l", "toggle_log", "Expand or restore the log", id="maximize_log", show=False),
        Binding("question_mark", "help", "Help", id="help", key_display="?"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    def __init__(self, data: str = "synthetic", preset: str | None = None, out_dir: str = "runs", runner=None, device: str = "auto"):
        super().__init__()
        self.data, self.initial_preset, self.out_dir = data, preset, out_dir
        self.runner = runner or EngineRunner()
        self.device, self.device_reason = resolve_device(device)
        self.stop_event = threading.Event()
        self.running = self.quitting = False
        self.series: dict[str, Series] = {}
        self.latest: Progress | None = None
        self.last_config: RunConfig | None = None
        self.dirty = False
        self.finished: list = []
        self.run_dirs: list[Path] = []  # every run folder this session wrote, printed on exit
        self.trainers: list[str] = []  # the runs of the current launch, in order ("1 of 2")
        self.phase, self.phase_since = "ready", time.monotonic()
        self.clock = datetime.now  # log timestamps (snapshot tests fix it)
        self.filled_preset = ""
        self.seeds = 1  # seeds per trainer of the current comparison

    # --- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield ControlPanel(list(preset_paths()), self.device.type, self.chosen_preset(), id="controls")
            with Vertical(id="main"):
                yield StatusLine(id="status")
                yield KeyNumbers(id="numbers")
                yield ChartGrid(id="charts")
                yield RichLog(id="log", markup=True, wrap=True, max_lines=500, min_width=20)
        yield Static(id="too-small")
        yield Footer()

    def chosen_preset(self) -> str:
        """The preset the app opens with: the one asked for, else the one recommended for this machine."""
        from engine.doctor import recommended_preset

        presets = preset_paths()
        wanted = self.initial_preset or recommended_preset(self.device)
        return wanted if wanted in presets else next(iter(presets))

    def on_mount(self) -> None:
        from engine.doctor import recommended_preset

        self.sub_title = f"{self.device.type} · recommended preset: {recommended_preset(self.device)} · ? help"
        self.fill_controls(self.chosen_preset())
        self.query_one(KeyNumbers).show(None)
        self.query_one(ChartGrid).draw({}, "GPU" if self.device.type != "cpu" else "CPU")
        self.query_one("#log", RichLog).border_title = "4 log · l: expand"
        self.query_one(StatusLine).show("ready")
        self.log_line(f"Ready on [b]{self.device.type}[/b] ({self.device_reason}). Choose a preset and press [b]s[/b] to start, "
                      "[b]c[/b] to compare original vs optimized, [b]h[/b] for history, [b]?[/b] for every key.")
        self.fit_to_size()
        self.set_interval(REDRAW_SECONDS, self.redraw)

    def on_unmount(self) -> None:
        self.stop_event.set()  # however the app ends, a run in its thread stops and saves

    def on_resize(self) -> None:
        self.fit_to_size()

    def fit_to_size(self) -> None:
        """Below MIN_SIZE say so rather than hide Start and Stop; on a short terminal show two charts."""
        width, height = self.size
        small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        self.query_one("#body").display = not small
        notice = self.query_one("#too-small", Static)
        notice.display = small
        notice.update(f"asym-tui needs a terminal of at least {MIN_SIZE[0]}×{MIN_SIZE[1]}; this one is {width}×{height}.\n"
                      "Enlarge the window (a run in progress goes on), or press q to quit.")
        self.query_one(ChartGrid).set_class(height < TALL, "short")
        self.query_one(ControlPanel).set_class(width < 100, "narrow")

    # --- controls ------------------------------------------------------------------------------
    @on(Select.Changed, "#preset")
    def preset_chosen(self, event: Select.Changed) -> None:
        if event.value is not Select.BLANK and event.value != self.filled_preset:
            self.fill_controls(str(event.value))

    def fill_controls(self, preset: str) -> None:
        """A preset fills every control; the data source stays the app's unless the preset names one."""
        try:
            config = load_config(preset)
        except ConfigError as exc:
            self.notify(str(exc), severity="error")
            return
        self.filled_preset = preset
        self.query_one("#trainer", Select).value = config.trainer
        self.query_one("#algorithm", Select).value = config.algorithm
        self.query_one("#amp", Checkbox).value = config.use_amp
        self.query_one("#compile", Checkbox).value = config.compile_model
        self.query_one("#num_envs", Input).value = str(config.num_envs)
        self.query_one("#duration", Input).value = f"{config.duration_s:g}s"
        self.query_one("#data", Input).value = config.data if config.data != "synthetic" else self.data
        try:
            self.query_one("#preset-description", Static).update(preset_description(preset))
        except ConfigError as exc:
            self.query_one("#preset-description", Static).update(str(exc))

    @on(Select.Changed, "#trainer")
    def trainer_chosen(self, event: Select.Changed) -> None:
        self.query_one("#num_envs", Input).disabled = event.value == "original"

    def build_config(self, trainer: str | None = None) -> RunConfig | None:
        """The run config from the controls, or None (with a notification saying what is wrong)."""
        num_envs, duration = self.query_one("#num_envs", Input), self.query_one("#duration", Input)
        for field in (num_envs, duration):
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                self.notify("; ".join(result.failure_descriptions), title="Invalid setting", severity="error")
                field.focus()
                return None
        chosen = trainer or str(self.query_one("#trainer", Select).value)
        overrides = {
            "trainer": "optimized" if chosen == "both" else chosen,
            "algorithm": str(self.query_one("#algorithm", Select).value),
            "use_amp": self.query_one("#amp", Checkbox).value,
            "compile_model": self.query_one("#compile", Checkbox).value,
            "num_envs": int(num_envs.value),
            "duration_s": parse_duration(duration.value),
            "data": self.query_one("#data", Input).value.strip() or "synthetic",
            "out_dir": self.out_dir,
        }
        try:
            config = load_config(str(self.query_one("#preset", Select).value), overrides)
            resolve_device(config.device)
        except ConfigError as exc:
            self.notify(str(exc), title="Invalid setting", severity="error")
            return None
        if config.min_num_envs > config.num_envs:
            config = config.replace(min_num_envs=config.num_envs)
        return config

    @on(Button.Pressed, "#start")
    def start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#stop")
    def stop_pressed(self) -> None:
        self.action_stop()

    # --- actions -------------------------------------------------------------------------------
    def action_start(self) -> None:
        mode = str(self.query_one("#trainer", Select).value)
        self.launch(compare=mode == "both")

    def action_compare(self) -> None:
        self.launch(compare=True)

    def launch(self, compare: bool) -> None:
        if self.running:
            self.notify("A run is already in progress; stop it first", severity="warning")
            return
        config = self.build_config()
        if config is None:
            return
        seeds = self.query_one("#seeds", Input)
        checked = seeds.validate(seeds.value)
        if compare and checked is not None and not checked.is_valid:
            self.notify("; ".join(checked.failure_descriptions), title="Invalid setting", severity="error")
            return
        self.seeds = int(seeds.value or 1) if compare else 1
        self.last_config = config
        self.series, self.latest, self.finished = {}, None, []
        self.trainers = ["original", "optimized"] if compare else [config.trainer]
        self.stop_event = threading.Event()
        self.set_running(True)
        self.set_phase("starting")
        what = f"original then optimized, {self.seeds} seed(s) each" if compare else config.trainer
        self.log_line(f"Starting {what}: preset {config.preset}, {config.algorithm}, {config.num_envs} envs, AMP {'on' if config.use_amp else 'off'}, "
                      f"compile {'on' if config.compile_model else 'off'}, {config.duration_s:g} s, data {config.data}")
        self.train_in_background(config, compare)

    @work(thread=True, exclusive=True, group="training", exit_on_error=False)
    def train_in_background(self, config: RunConfig, compare: bool) -> None:
        """Runs in a thread: only posts messages, never touches widgets."""
        post = lambda event: self.post_message(EngineEvent(event))
        try:
            if compare:
                self.post_message(RunFinished((), None, self.runner.compare(config, post, self.stop_event, self.seeds)))
            else:
                self.post_message(RunFinished(self.runner.train(config, post, self.stop_event), None))
        except UserError as exc:
            self.post_message(RunFinished((), str(exc)))
        except Exception as exc:  # the UI must survive any engine failure and say what it was
            self.post_message(RunFinished((), f"{type(exc).__name__}: {exc}"))

    def action_stop(self) -> None:
        if self.running:
            self.stop_event.set()
            self.log_line("[yellow]Stopping after the current update; the checkpoint and summary will be written…[/]")

    def action_history(self) -> None:
        self.push_screen(HistoryScreen(self.out_dir))

    def action_doctor(self) -> None:
        self.push_screen(DoctorScreen())

    def action_toggle(self, panel: str) -> None:
        widget = self.query_one(f"#{panel}")
        widget.display = not widget.display

    def action_toggle_log(self) -> None:
        """The log full screen (to read long lines and scroll back), or back in its pane."""
        if self.screen.maximized is not None:
            self.screen.minimize()
        else:
            self.screen.maximize(self.query_one("#log", RichLog), container=False)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        bindings = [*self.screen.BINDINGS, *(self.BINDINGS if len(self.screen_stack) == 1 else [])]
        keys = [(binding.key_display or binding.key.replace("question_mark", "?"), binding.description)
                for binding in bindings if binding.description]
        self.push_screen(HelpScreen(keys))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The main screen's keys act only there: `s` in History must not start a run."""
        if action in MAIN_SCREEN_ACTIONS and len(self.screen_stack) > 1:
            return False
        return True

    def action_save_preset(self) -> None:
        config = self.build_config()
        if config is None:
            return

        def save(name: str | None) -> None:
            if not name:
                return
            try:
                path = save_user_preset(name, config, "saved from asym-tui")
            except ConfigError as exc:
                self.notify(str(exc), severity="error")
                return
            select = self.query_one("#preset", Select)
            select.set_options([(preset, preset) for preset in preset_paths()])
            select.value = name
            self.notify(f"Preset saved to {path}")

        self.push_screen(SavePresetScreen(), save)

    async def action_quit(self) -> None:
        if not self.running:
            self.exit()
            return

        def answered(stop: bool | None) -> None:
            if stop:
                self.quitting = True
                self.action_stop()
                self.notify("Stopping the run, saving, then quitting…")

        self.push_screen(ConfirmScreen("A run is in progress. Stop it (its checkpoint and summary are saved) and quit?"), answered)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Start training", "Train with the current settings", self.action_start)
        yield SystemCommand("Stop training", "Stop after the current update and save", self.action_stop)
        yield SystemCommand("Compare trainers", "Original then optimized on the same data, seed and duration", self.action_compare)
        yield SystemCommand("History", "Past runs: open one, compare two", self.action_history)
        yield SystemCommand("Save preset", "Save the current settings as a user preset", self.action_save_preset)
        yield SystemCommand("Doctor", "What this machine can do: device, GPU, AMP, torch.compile, recommended preset", self.action_doctor)
        for panel in ("controls", "numbers", "charts", "log"):
            yield SystemCommand(f"Toggle {panel}", f"Show or hide the {panel} panel", lambda panel=panel: self.action_toggle(panel))

    # --- events from the training thread ------------------------------------------------------
    def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if isinstance(event, LogMessage):
            colour = {"warning": "yellow", "error": "red"}.get(event.level, "cyan")
            self.log_line(f"[{colour}]{event.level}[/]: {escape(event.text)}")
            return
        self.series.setdefault(event.trainer, Series()).add(event)
        if self.latest is None or event.phase != self.latest.phase or event.trainer != self.latest.trainer:
            self.set_phase(event.phase)
        self.latest = event
        self.dirty = True

    def on_run_finished(self, message: RunFinished) -> None:
        self.set_running(False)
        self.redraw()
        if message.error:
            self.notify(message.error, title="Run failed", severity="error", timeout=10)
            self.log_line(f"[red]error[/]: {escape(message.error)}")
        self.finished = list(message.outcomes)
        for outcome in message.outcomes:
            self.announce(outcome)
        if message.outcomes:
            last = message.outcomes[-1]
            initial = self.last_config.initial_equity if self.last_config else 10_000.0
            self.query_one(KeyNumbers).show_result(last.summary, initial)
            self.set_phase("done" if not message.error else "failed")
            summary = last.summary
            self.query_one(StatusLine).show(self.phase, f"{summary.trainer} {summary.status} ({summary.stop_reason})",
                                            summary.throughput.elapsed_s)
        else:
            self.set_phase("failed" if message.error else "ready")
        if message.comparison is not None:
            self.show_comparison(message.comparison)
        if self.quitting:
            self.exit()

    def show_comparison(self, comparison) -> None:
        """Each run's result in the log, the folder, then the comparison table and verdict."""
        for side in (comparison.left, comparison.right):
            for summary in side.summaries:
                self.log_line(f"[b]{escape(side.label)}[/b] seed {summary.seed} {summary.status}: {escape(result_text(summary))}")
        if comparison.folder:
            self.run_dirs.append(Path(comparison.folder))
            self.log_line(f"Comparison folder: {escape(str(comparison.folder))}")
        for warning in comparison.warnings:
            self.log_line(f"[yellow]warning[/]: {escape(warning)}")
        summaries = comparison.right.summaries or comparison.left.summaries
        if summaries:
            initial = self.last_config.initial_equity if self.last_config else 10_000.0
            self.query_one(KeyNumbers).show_result(summaries[-1], initial)
            self.query_one(StatusLine).show("done", f"compared {comparison_title(comparison)}", summaries[-1].throughput.elapsed_s)
        if comparison.left.summaries and comparison.right.summaries and not self.quitting:
            self.push_screen(ComparisonScreen(comparison))

    def announce(self, outcome) -> None:
        """A finished run's result and folder, in the log and as a notification."""
        summary = outcome.summary
        self.run_dirs.append(Path(outcome.run_dir))
        self.log_line(f"[b]{summary.trainer}[/b] {summary.status} ({escape(summary.stop_reason)}): {escape(result_text(summary))}")
        if (summary.selected_model or {}).get("verdict"):
            self.log_line(f"selection: {escape(summary.selected_model['verdict'])}")
        self.log_line(f"Run folder: {escape(str(outcome.run_dir))}")
        self.notify(str(outcome.run_dir), title=f"{summary.trainer} run saved")

    # --- drawing -------------------------------------------------------------------------------
    def redraw(self) -> None:
        if self.running:
            self.show_status()
        if not self.dirty:
            return
        self.dirty = False
        initial = self.last_config.initial_equity if self.last_config else 10_000.0
        self.query_one(KeyNumbers).show(self.latest, initial)
        self.query_one(ChartGrid).draw(self.series, self.latest.device_label if self.latest else "CPU")

    def set_phase(self, phase: str) -> None:
        self.phase, self.phase_since = phase, time.monotonic()

    def show_status(self) -> None:
        """Phase (with its seconds while compiling or warming up), the stage of a comparison, time left."""
        event = self.latest
        trainer = event.trainer if event else (self.trainers[0] if self.trainers else "")
        slow = self.phase in ("starting", "compiling", "warming up")
        duration = event.duration_s if event else (self.last_config.duration_s if self.last_config else 0.0)
        self.query_one(StatusLine).show(self.phase, stage_text(trainer, self.trainers), event.elapsed_s if event else None,
                                        duration or 0.0, time.monotonic() - self.phase_since if slow else None)

    def set_running(self, running: bool) -> None:
        self.running = running
        self.query_one("#start", Button).disabled = running
        self.query_one("#stop", Button).disabled = not running

    def log_line(self, text: str) -> None:
        self.query_one("#log", RichLog).write(f"[dim]{self.clock():%H:%M:%S}[/] {text}")

