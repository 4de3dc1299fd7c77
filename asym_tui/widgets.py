"""The main screen's parts: control panel, key numbers, charts. Each only shows state it is given."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.validation import Function, Integer
from textual.widgets import Button, Input, Label, Select, Static, Switch
from textual_plotext import PlotextPlot

from engine.config import ConfigError, parse_duration
from engine.monitor import format_reading
from engine.trainers import Progress

NUM_ENVS_LIMIT = {"cpu": 4096, "mps": 1024, "cuda": 65536}  # beyond these the device can't hold the rollout
TRAINER_CHOICES = [("Optimized", "optimized"), ("Original", "original"), ("Both (compare)", "both")]
ALGORITHM_CHOICES = [("PPO (optimized trainer)", "ppo"), ("REINFORCE (optimized)", "reinforce")]


def is_duration(text: str) -> bool:
    try:
        return parse_duration(text) > 0
    except ConfigError:
        return False


class ControlPanel(VerticalScroll):
    """Preset, trainer, AMP, compile, num_envs, duration, data source; Start and Stop."""

    def __init__(self, presets: list[str], device_type: str, **kwargs):
        super().__init__(**kwargs)
        self.presets, self.device_type = presets, device_type

    def compose(self) -> ComposeResult:
        yield Label("Preset")
        yield Select([(name, name) for name in self.presets], id="preset", allow_blank=False, compact=True)
        yield Label("Trainer")
        yield Select(TRAINER_CHOICES, id="trainer", allow_blank=False, value="optimized", compact=True)
        yield Select(ALGORITHM_CHOICES, id="algorithm", allow_blank=False, value="ppo", compact=True, tooltip="the optimized trainer's algorithm")
        with Horizontal(classes="switch-row"):
            yield Switch(id="amp")
            yield Label("AMP", classes="switch-label")
        with Horizontal(classes="switch-row"):
            yield Switch(id="compile")
            yield Label("torch.compile", classes="switch-label")
        limit = NUM_ENVS_LIMIT.get(self.device_type, 4096)
        yield Label(f"num_envs (1–{limit:,} on {self.device_type})")
        yield Input(id="num_envs", type="integer", compact=True, validators=[Integer(1, limit, failure_description=f"num_envs must be 1–{limit:,} on {self.device_type}")])
        yield Label("Duration (30s, 2m, 1h)")
        yield Input(id="duration", compact=True, validators=[Function(is_duration, "use a duration like 30s, 2m or 1h")])
        yield Label("Data source")
        yield Input(id="data", placeholder="synthetic, file, folder or glob", compact=True)
        with Horizontal(id="buttons"):
            yield Button("Start", id="start", variant="success")
            yield Button("Stop", id="stop", variant="error", disabled=True)


@dataclass
class Series:
    """One trainer's progress over time, for the charts."""

    minutes: list[float] = field(default_factory=list)
    episodes_per_min: list[float] = field(default_factory=list)
    utilisation: list[float] = field(default_factory=list)
    train_sharpe: list[float] = field(default_factory=list)
    val_minutes: list[float] = field(default_factory=list)
    val_sharpe: list[float] = field(default_factory=list)
    portfolio: list[float] = field(default_factory=list)
    last_val_sharpe: float | None = None

    def add(self, event: Progress) -> None:
        if event.phase != "training" or not event.episodes:
            return
        minute = event.elapsed_s / 60
        self.minutes.append(minute)
        self.episodes_per_min.append(event.episodes_per_min)
        self.utilisation.append(event.utilisation if event.utilisation is not None else math.nan)
        self.train_sharpe.append(event.train_sharpe)
        self.portfolio.append(event.portfolio)
        if event.val_score is not None and event.val_score != self.last_val_sharpe:
            self.last_val_sharpe = event.val_score  # the selection score: validation and its mirror image
            self.val_minutes.append(minute)
            self.val_sharpe.append(event.val_score)


KEY_NUMBERS = ("episodes/min", "steps/s", "device", "memory", "portfolio", "return", "Sharpe", "max DD", "updates", "phase")


class KeyNumber(Static):
    def __init__(self, title: str, **kwargs):
        super().__init__(**kwargs)
        self.border_title = title


class KeyNumbers(Grid):
    """The row of numbers a user glances at: throughput, device use, portfolio, risk, schedule, phase."""

    def compose(self) -> ComposeResult:
        for title in KEY_NUMBERS:
            yield KeyNumber(title, id="key-" + title.replace("/", "-").replace(":", "-").replace(" ", "-"), classes="key-number")

    def show(self, event: Progress | None, initial_equity: float = 10_000.0) -> None:
        values = dict.fromkeys(KEY_NUMBERS, "—")
        titles = {"device": "CPU %", "portfolio": "portfolio", "return": "return", "updates": "updates macro:micro, /s"}
        if event is not None:
            # The greedy backtest on validation is the honest figure; before the first one, training episodes.
            source = "val" if event.val_portfolio is not None else "train"
            titles = {"device": f"{event.device_label} %", "portfolio": f"portfolio ({source})", "return": f"return ({source})",
                      "updates": "updates macro:micro, /s"}
            portfolio = event.val_portfolio if event.val_portfolio is not None else event.portfolio
            values.update({
                "episodes/min": f"{event.episodes_per_min:,.0f}",
                "steps/s": f"{event.steps_per_s:,.0f}",
                "device": format_reading(event.utilisation, "%"),
                "memory": format_reading(event.memory_used_mb / 1024 if event.memory_used_mb is not None else None, " GB", 1),
                "portfolio": "—" if math.isnan(portfolio) else f"${portfolio:,.0f}",
                "return": "—" if math.isnan(portfolio) else f"{100 * (portfolio / initial_equity - 1):+.2f}%",
                "Sharpe": f"{event.val_sharpe:.2f} val" if event.val_sharpe is not None else f"{event.train_sharpe:.2f} train",
                "max DD": f"{100 * event.val_drawdown:.1f}%" if event.val_drawdown is not None else "—",
                "updates": f"{event.macro_updates}:{event.micro_updates} · {event.optimizer_steps_per_s:,.1f}/s",
                "phase": f"{event.phase} ({event.trainer})",
            })
        for title, value in values.items():
            widget = self.query_one("#key-" + title.replace("/", "-").replace(":", "-").replace(" ", "-"), KeyNumber)
            widget.update(value)
            widget.border_title = titles.get(title, title)


class Chart(PlotextPlot):
    """A time chart of one quantity for each trainer; its title is the border title."""

    def __init__(self, title: str, ylabel: str, xlabel: str = "minutes", **kwargs):
        super().__init__(**kwargs)
        self.ylabel, self.xlabel = ylabel, xlabel
        self.title = title

    @property
    def title(self) -> str:
        return str(self.border_title)

    @title.setter
    def title(self, text: str) -> None:
        self.border_title = text

    def draw(self, lines: list[tuple[str, list[float], list[float]]]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel(self.xlabel)
        drawn = False
        for label, xs, ys in lines:
            points = [(x, y) for x, y in zip(xs, ys) if not (isinstance(y, float) and math.isnan(y))]
            if points:
                plt.plot([p[0] for p in points], [p[1] for p in points], label=label, marker="braille")
                drawn = True
        if not drawn:
            plt.title("waiting for data")
        self.refresh()


class ChartGrid(Grid):
    CHARTS = (("throughput", "Throughput (episodes/min)", "eps/min"), ("device", "Device use (%)", "%"),
              ("sharpe", "Sharpe (train rolling; validation score = val and mirror)", "Sharpe"), ("portfolio", "Portfolio value ($)", "$"))

    def compose(self) -> ComposeResult:
        for chart_id, title, ylabel in self.CHARTS:
            yield Chart(title, ylabel, id=f"chart-{chart_id}")

    def draw(self, series: dict[str, Series], device_label: str = "CPU") -> None:
        self.query_one("#chart-throughput", Chart).draw([(name, s.minutes, s.episodes_per_min) for name, s in series.items()])
        device = self.query_one("#chart-device", Chart)
        device.title = f"{device_label} use (%)"
        device.draw([(name, s.minutes, s.utilisation) for name, s in series.items()])
        lines = []
        for name, s in series.items():
            lines.append((f"{name} train", s.minutes, s.train_sharpe))
            lines.append((f"{name} val score", s.val_minutes, s.val_sharpe))
        self.query_one("#chart-sharpe", Chart).draw(lines)
        self.query_one("#chart-portfolio", Chart).draw([(name, s.minutes, s.portfolio) for name, s in series.items()])

