"""The asym-tui application: pick a preset, train, watch, compare, walk forward, browse history.

Training runs in a thread worker that only posts messages; the screen redraws from a 4 Hz timer, so
thousands of events per second never freeze it. The engine is reached through a runner object
(`EngineRunner` by default; tests can pass a fake one). The app is assembled from rooms that change
apart: controls (asym_tui.controls), run control (asym_tui.run_control), the live view
(asym_tui.live_view) and the screens (asym_tui.screens, asym_tui.walkforward_screen).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Select, Static

from asym_tui.charts import ChartGrid
from asym_tui.controls import ControlPanel
from asym_tui.live_view import REDRAW_SECONDS, LiveView
from asym_tui.run_control import EngineRunner, RunControl
from asym_tui.screens import ConfirmScreen, DoctorScreen, HelpScreen, HistoryScreen, SavePresetScreen
from asym_tui.walkforward_screen import WalkForwardScreen
from asym_tui.widgets import Diagnostics, KeyNumbers, LogPanel, StatusLine
from engine.config import ConfigError, RunConfig, preset_paths, save_user_preset
from engine.events import Progress
from engine.monitor import resolve_device

MIN_SIZE = (80, 24)  # below this the controls cannot all be seen: the app says so instead
TALL = 40  # from this many rows the four charts show; below, the first two
MAIN_SCREEN_ACTIONS = {"start", "stop", "compare", "walkforward", "history", "save_preset", "doctor", "toggle", "toggle_log"}

__all__ = ["AsymApp", "EngineRunner"]


class AsymApp(RunControl, LiveView, App):
    TITLE = "asym-tui"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("s", "start", "Start", id="start"),
        Binding("x", "stop", "Stop", id="stop"),
        Binding("c", "compare", "Compare", id="compare"),
        Binding("w", "walkforward", "Walk-forward", id="walkforward"),
        Binding("h", "history", "History", id="history"),
        Binding("p", "save_preset", "Save the settings as a preset", id="save_preset", show=False),
        Binding("d", "doctor", "Doctor", id="doctor", show=False),  # in ? and the palette: the footer fits 80 columns
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
        self.last_config: RunConfig | None = None
        self.latest: Progress | None = None
        self.dirty = False
        self.run_dirs: list[Path] = []  # every run folder this session wrote, printed on exit
        self.reset_view([])
        self.phase, self.phase_since = "ready", time.monotonic()
        self.clock = datetime.now  # log timestamps (snapshot tests fix it)
        self.seeds = 1  # seeds per trainer of the current comparison

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield ControlPanel(list(preset_paths()), self.device.type, self.chosen_preset(), self.data, id="controls")
            with Vertical(id="main"):
                yield StatusLine(id="status")
                yield KeyNumbers(id="numbers")
                yield Diagnostics(id="diagnostics")
                yield ChartGrid(id="charts")
                yield LogPanel(id="log")
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
        self.query_one(KeyNumbers).show(None)
        self.query_one(Diagnostics).show(None, [])
        self.query_one(ChartGrid).draw({}, "GPU" if self.device.type != "cpu" else "CPU")
        self.query_one(LogPanel).border_title = "4 log · l: expand"
        self.query_one(StatusLine).show("ready")
        self.log_line(f"Ready on [b]{self.device.type}[/b] ({self.device_reason}). Choose a preset and press [b]s[/b] to start, "
                      "[b]c[/b] to compare original vs optimized, [b]w[/b] to walk forward, [b]h[/b] for history, [b]?[/b] for every key.")
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
        diagnostics = self.query_one(Diagnostics)
        diagnostics.show_hints = height >= TALL  # below, the hints are counted (and logged): one line
        diagnostics.set_class(diagnostics.show_hints, "tall")
        self.query_one(ControlPanel).set_class(width < 100, "narrow")
        self.query_one(Footer).compact = width < 100

    # --- screens and panels --------------------------------------------------------------------
    def action_walkforward(self) -> None:
        if self.running:
            self.notify("A run is in progress; stop it before a walk-forward study", severity="warning")
            return
        panel = self.query_one(ControlPanel)
        if invalid := panel.invalid_field("num_envs", "duration"):
            self.notify(invalid[1], title="Invalid setting", severity="error")
            return
        self.push_screen(WalkForwardScreen(panel.preset, panel.overrides(self.out_dir)))

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
            self.screen.maximize(self.query_one(LogPanel), container=False)

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
        yield SystemCommand("Walk-forward", "Train each fold from scratch and judge it out of sample", self.action_walkforward)
        yield SystemCommand("History", "Past runs: open one, compare two", self.action_history)
        yield SystemCommand("Save preset", "Save the current settings as a user preset", self.action_save_preset)
        yield SystemCommand("Doctor", "What this machine can do: device, GPU, AMP, torch.compile, recommended preset", self.action_doctor)
        for panel in ("controls", "numbers", "charts", "log"):
            yield SystemCommand(f"Toggle {panel}", f"Show or hide the {panel} panel", lambda panel=panel: self.action_toggle(panel))
