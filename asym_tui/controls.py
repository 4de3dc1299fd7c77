"""The control panel: a preset fills it, and it reads back as that preset plus the user's overrides.

Start and Stop stay in view; the fields scroll. Short rows ("label  value") keep every field, the
compare seeds included, within an 80×24 terminal.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.validation import Function, Integer
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from engine.config import FEE_LEVELS, ConfigError, RunConfig, load_config, parse_duration, preset_description
from engine.monitor import num_envs_limit

TRAINER_CHOICES = [("Optimized", "optimized"), ("Original", "original"), ("Both (compare)", "both")]
ALGORITHM_CHOICES = [("PPO", "ppo"), ("REINFORCE", "reinforce")]
PRESET_FEES = "preset"  # the fee picker's value when the preset's costs are not one of FEE_LEVELS


def is_duration(text: str) -> bool:
    try:
        return parse_duration(text) > 0
    except ConfigError:
        return False


def fee_level(config: RunConfig) -> str:
    """The venue level whose costs the config has, else PRESET_FEES."""
    return next((name for name, level in FEE_LEVELS.items() if level == (config.commission, config.slippage)), PRESET_FEES)


def fee_choices(config: RunConfig) -> list[tuple[str, str]]:
    """Every venue level with its costs; the preset's own costs first when they are none of them."""
    levels = [(f"{name} {100 * c:.3g}+{100 * s:.3g}%", name) for name, (c, s) in FEE_LEVELS.items()]
    if fee_level(config) == PRESET_FEES:
        levels.insert(0, (f"preset {100 * config.commission:.3g}+{100 * config.slippage:.3g}%", PRESET_FEES))
    return levels


def field_row(label: str, field, tooltip: str) -> Horizontal:
    """A label and its field on one line (their tooltip says more)."""
    heading = Label(label, classes="field-label")
    heading.tooltip = field.tooltip = tooltip
    return Horizontal(heading, field, classes="field-row")


class ControlPanel(Vertical):
    """Preset (with its description), trainer, algorithm, AMP, compile, fees, shorts, num_envs, duration,
    data source and seeds per trainer of a comparison."""

    def __init__(self, presets: list[str], device_type: str, selected: str, data: str = "synthetic", **kwargs):
        super().__init__(**kwargs)
        self.presets, self.device_type, self.selected, self.data = presets, device_type, selected, data
        self.filled_preset = ""
        self.border_title = "1 controls"

    def compose(self) -> ComposeResult:
        with Horizontal(id="buttons"):
            yield Button("Start", id="start", variant="success", tooltip="s", action="app.start")
            yield Button("Stop", id="stop", variant="error", disabled=True, tooltip="x", action="app.stop")
        with VerticalScroll(id="fields"):
            yield Label("Preset")
            yield Select([(name, name) for name in self.presets], id="preset", allow_blank=False, compact=True, value=self.selected)
            yield Static(id="preset-description")
            yield Label("Trainer")
            yield Select(TRAINER_CHOICES, id="trainer", allow_blank=False, value="optimized", compact=True)
            yield Select(ALGORITHM_CHOICES, id="algorithm", allow_blank=False, value="ppo", compact=True,
                         tooltip="the optimized trainer's algorithm (the original always runs REINFORCE)")
            with Horizontal(classes="field-row"):
                yield Checkbox("AMP", id="amp", compact=True, tooltip="mixed precision")
                yield Checkbox("compile", id="compile", compact=True, tooltip="torch.compile the policy")
            yield Select(fee_choices(RunConfig()), id="fees", allow_blank=False, value="spot-taker", compact=True,
                         tooltip="fees: the venue's commission + slippage per trade, in % of the notional")
            yield Checkbox("shorts allowed", id="shorts", value=True, compact=True, tooltip="off: long or flat only")
            limit = num_envs_limit(self.device_type)
            yield field_row("num_envs", Input(id="num_envs", type="integer", compact=True, validators=[
                Integer(1, limit, failure_description=f"num_envs must be 1–{limit:,} on {self.device_type}")]),
                f"parallel episodes of the optimized trainer: 1–{limit:,} on {self.device_type}")
            yield field_row("duration", Input(id="duration", compact=True, validators=[
                Function(is_duration, "use a duration like 30s, 2m or 1h")]), "training time: 30s, 2m, 1h")
            yield field_row("data", Input(id="data", placeholder="synthetic, file, folder", compact=True),
                            "synthetic[:days=N,seed=S], a CSV/Parquet/ZIP file, a folder or a glob")
            yield field_row("seeds (c)", Input("1", id="seeds", type="integer", compact=True, validators=[
                Integer(1, 100, failure_description="seeds per trainer must be 1–100")]), "seeds per trainer when comparing (c): 1–100")

    def on_mount(self) -> None:
        self.fill(self.selected)

    @on(Select.Changed, "#preset")
    def preset_chosen(self, event: Select.Changed) -> None:
        if event.value is not Select.BLANK and event.value != self.filled_preset:
            self.fill(str(event.value))

    @on(Select.Changed, "#trainer")
    def trainer_chosen(self, event: Select.Changed) -> None:
        self.query_one("#num_envs", Input).disabled = event.value == "original"

    def fill(self, preset: str) -> None:
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
        fees = self.query_one("#fees", Select)
        fees.set_options(fee_choices(config))
        fees.value = fee_level(config)
        self.query_one("#shorts", Checkbox).value = config.allow_short
        self.query_one("#num_envs", Input).value = str(config.num_envs)
        self.query_one("#duration", Input).value = f"{config.duration_s:g}s"
        self.query_one("#data", Input).value = config.data if config.data != "synthetic" else self.data
        try:
            self.query_one("#preset-description", Static).update(preset_description(preset))
        except ConfigError as exc:
            self.query_one("#preset-description", Static).update(str(exc))

    @property
    def preset(self) -> str:
        return str(self.query_one("#preset", Select).value)

    @property
    def mode(self) -> str:
        """optimized, original, or both (compare)."""
        return str(self.query_one("#trainer", Select).value)

    def invalid_field(self, *ids: str) -> tuple[Input, str] | None:
        """The first of these inputs whose value fails its validators, with what is wrong."""
        for field_id in ids:
            field = self.query_one(f"#{field_id}", Input)
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                return field, "; ".join(result.failure_descriptions)
        return None

    def overrides(self, out_dir: str) -> dict:
        """What the user set, over the preset (validate the inputs first: see `invalid_field`)."""
        fees = str(self.query_one("#fees", Select).value)
        costs = dict(zip(("commission", "slippage"), FEE_LEVELS[fees])) if fees in FEE_LEVELS else {}
        return {
            "trainer": "optimized" if self.mode == "both" else self.mode,
            "algorithm": str(self.query_one("#algorithm", Select).value),
            "use_amp": self.query_one("#amp", Checkbox).value,
            "compile_model": self.query_one("#compile", Checkbox).value,
            "num_envs": int(self.query_one("#num_envs", Input).value),
            "duration_s": parse_duration(self.query_one("#duration", Input).value),
            "data": self.query_one("#data", Input).value.strip() or "synthetic",
            "allow_short": self.query_one("#shorts", Checkbox).value,
            "out_dir": out_dir,
            **costs,
        }

    @property
    def seeds(self) -> int:
        return int(self.query_one("#seeds", Input).value or 1)

    def set_running(self, running: bool) -> None:
        self.query_one("#start", Button).disabled = running
        self.query_one("#stop", Button).disabled = not running
