"""The main screen's parts: control panel, status line, key numbers, charts. Each only shows state it is given."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.validation import Function, Integer
from textual.widgets import Button, Checkbox, Input, Label, Select, Static
from textual_plotext import PlotextPlot

from asym_tui.tables import number, timing_text
from engine.config import ConfigError, parse_duration
from engine.events import Progress, RunSummary
from engine.monitor import num_envs_limit

TRAINER_CHOICES = [("Optimized", "optimized"), ("Original", "original"), ("Both (compare)", "both")]
ALGORITHM_CHOICES = [("PPO", "ppo"), ("REINFORCE", "reinforce")]
TRAINER_COLOURS = {"original": "orange", "optimized": "cyan"}  # one colour per trainer in every chart and legend
EXTRA_COLOURS = ("magenta", "green", "yellow", "red")


def is_duration(text: str) -> bool:
    try:
        return parse_duration(text) > 0
    except ConfigError:
        return False


def compact(value: float | None, prefix: str = "") -> str:
    """A figure that fits a small card: 1,234 · 12.3k · 1.23M."""
    if value is None or math.isnan(value):
        return "N/A"
    for threshold, size, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(value) >= threshold:
            return f"{prefix}{value / size:.3g}{suffix}"
    return f"{prefix}{value:,.0f}"


class ControlPanel(Vertical):
    """Start and Stop always in view; below them preset (with its description), trainer, algorithm, AMP,
    compile, num_envs, duration and data source."""

    def __init__(self, presets: list[str], device_type: str, selected: str, **kwargs):
        super().__init__(**kwargs)
        self.presets, self.device_type, self.selected = presets, device_type, selected
        self.border_title = "1 controls"

    def compose(self) -> ComposeResult:
        with Horizontal(id="buttons"):
            yield Button("Start", id="start", variant="success", tooltip="s")
            yield Button("Stop", id="stop", variant="error", disabled=True, tooltip="x")
        with VerticalScroll(id="fields"):
            yield Label("Preset")
            yield Select([(name, name) for name in self.presets], id="preset", allow_blank=False, compact=True, value=self.selected)
            yield Static(id="preset-description")
            yield Label("Trainer")
            yield Select(TRAINER_CHOICES, id="trainer", allow_blank=False, value="optimized", compact=True)
            yield Select(ALGORITHM_CHOICES, id="algorithm", allow_blank=False, value="ppo", compact=True,
                         tooltip="the optimized trainer's algorithm (the original always runs REINFORCE)")
            yield Checkbox("AMP", id="amp", compact=True)
            yield Checkbox("torch.compile", id="compile", compact=True)
            limit = num_envs_limit(self.device_type)
            yield Label(f"num_envs (1–{limit:,} on {self.device_type})")
            yield Input(id="num_envs", type="integer", compact=True,
                        validators=[Integer(1, limit, failure_description=f"num_envs must be 1–{limit:,} on {self.device_type}")])
            yield Label("Duration (30s, 2m, 1h)")
            yield Input(id="duration", compact=True, validators=[Function(is_duration, "use a duration like 30s, 2m or 1h")])
            yield Label("Data source")
            yield Input(id="data", placeholder="synthetic, file, folder or glob", compact=True)
            yield Label("Seeds per trainer (compare)")
            yield Input("1", id="seeds", type="integer", compact=True,
                        validators=[Integer(1, 100, failure_description="seeds per trainer must be 1–100")])


@dataclass
class Series:
    """One trainer's progress over time, for the charts (x in seconds of wall time)."""

    seconds: list[float] = field(default_factory=list)
    episodes_per_min: list[float] = field(default_factory=list)
    utilisation: list[float] = field(default_factory=list)
    train_sharpe: list[float] = field(default_factory=list)
    val_seconds: list[float] = field(default_factory=list)
    val_sharpe: list[float] = field(default_factory=list)
    portfolio: list[float] = field(default_factory=list)
    last_val_sharpe: float | None = None

    def add(self, event: Progress) -> None:
        if event.phase != "training" or not event.episodes:
            return
        self.seconds.append(event.elapsed_s)
        self.episodes_per_min.append(event.episodes_per_min)
        self.utilisation.append(event.utilisation if event.utilisation is not None else math.nan)
        self.train_sharpe.append(event.train_sharpe)
        self.portfolio.append(event.portfolio)
        if event.val_score is not None and event.val_score != self.last_val_sharpe:
            self.last_val_sharpe = event.val_score  # the selection score: validation and its mirror image
            self.val_seconds.append(event.elapsed_s)
            self.val_sharpe.append(event.val_score)


# card id: (title on a narrow screen, title when there is room)
KEY_NUMBERS = {"episodes-min": ("eps/min", "episodes/min"), "steps-s": ("steps/s", "env-steps/s"), "updates": ("upd/s", "updates/s"),
               "device": ("CPU %", "CPU % (process)"), "memory": ("memory", "memory (process)"), "episodes": ("episodes", "episodes"),
               "portfolio": ("value", "portfolio"), "return": ("return", "return"), "Sharpe": ("Sharpe", "Sharpe"),
               "max-DD": ("max DD", "max drawdown")}
WIDE_CARD = 14  # a card this wide takes the long title


class KeyNumber(Static):
    """Title, value and where the value comes from, on three centred lines (no border: every column is text)."""

    def __init__(self, title: str, **kwargs):
        super().__init__(**kwargs)
        self.heading, self.figure, self.source = title, "—", ""

    def show(self, figure: str | None = None, source: str | None = None, title: str | None = None) -> None:
        self.figure = self.figure if figure is None else figure
        self.source = self.source if source is None else source
        self.heading = self.heading if title is None else title
        self.update(Text.assemble((self.heading, "dim"), "\n", (self.figure, "bold"), "\n", (self.source, "dim italic"),
                                  justify="center", no_wrap=True, overflow="ellipsis"))


class KeyNumbers(Grid):
    """The numbers a user glances at: throughput and resources on top; the policy's result below, its
    source (train episodes, validation, test) in each card's bottom border."""

    device_label = "CPU"

    def compose(self) -> ComposeResult:
        for key, (title, _) in KEY_NUMBERS.items():
            yield KeyNumber(title, id=f"key-{key}", classes="key-number")

    def on_resize(self) -> None:
        for key, (short, long) in KEY_NUMBERS.items():
            card = self.query_one(f"#key-{key}", KeyNumber)
            title = long if card.size.width >= WIDE_CARD else short
            card.show(title=title.replace("CPU", self.device_label) if key == "device" else title)

    def show(self, event: Progress | None, initial_equity: float = 10_000.0) -> None:
        values = dict.fromkeys(KEY_NUMBERS, "—")
        sources = dict.fromkeys(("portfolio", "return", "Sharpe", "max-DD"), "")
        if event is not None:
            if event.device_label != self.device_label:  # the device card's title names it
                self.device_label = event.device_label
                self.on_resize()
            # The greedy backtest on validation is the honest figure; before the first one, training episodes.
            validated = event.val_portfolio is not None
            portfolio = event.val_portfolio if validated else event.portfolio
            values.update({
                "episodes-min": compact(event.episodes_per_min), "steps-s": compact(event.steps_per_s),
                "updates": number(event.optimizer_steps_per_s, "{:,.1f}"), "device": number(event.utilisation, "{:.0f}%"),
                "memory": memory_text(event.memory_used_mb), "episodes": compact(float(event.episodes)),
                "portfolio": compact(portfolio, "$") if not math.isnan(portfolio) else "—",
                "return": "—" if math.isnan(portfolio) else f"{100 * (portfolio / initial_equity - 1):+.2f}%",
                "Sharpe": number(event.val_sharpe if event.val_sharpe is not None else event.train_sharpe),
                "max-DD": number(event.val_drawdown and 100 * event.val_drawdown, "{:.1f}%"),
            })
            sources = {"portfolio": "val" if validated else "train", "return": "val" if validated else "train",
                       "Sharpe": "val" if event.val_sharpe is not None else "train", "max-DD": "val" if validated else ""}
        self.fill(values, sources)

    def show_result(self, summary: RunSummary, initial_equity: float = 10_000.0) -> None:
        """A finished run: its throughput, and the chosen model's test backtest, labelled 'test'."""
        agent, throughput = summary.test.get("agent") or {}, summary.throughput
        portfolio = summary.final_portfolio
        values = {"episodes-min": compact(throughput.episodes_per_min), "steps-s": compact(throughput.steps_per_s),
                  "updates": number(throughput.optimizer_steps_per_s, "{:,.1f}"),
                  "device": number(summary.resources.utilisation_mean, "{:.0f}%"),
                  "memory": memory_text(summary.resources.peak_memory_mb), "episodes": compact(float(throughput.episodes)),
                  "portfolio": compact(portfolio, "$") if portfolio is not None else "N/A",
                  "return": number(None if portfolio is None else 100 * (portfolio / initial_equity - 1), "{:+.2f}%"),
                  "Sharpe": number(agent.get("sharpe")), "max-DD": number(agent.get("max_drawdown") and 100 * agent["max_drawdown"], "{:.1f}%")}
        self.fill(values, {**dict.fromkeys(("portfolio", "return", "Sharpe", "max-DD"), "test"), "device": "mean", "memory": "peak"})

    def fill(self, values: dict[str, str], subtitles: dict[str, str]) -> None:
        for key, value in values.items():
            self.query_one(f"#key-{key}", KeyNumber).show(value, subtitles.get(key, ""))


def memory_text(megabytes: float | None) -> str:
    if megabytes is None:
        return "N/A"
    return f"{megabytes / 1024:.1f} GB" if megabytes >= 1024 else f"{megabytes:,.0f} MB"


class StatusLine(Static):
    """What is happening now: phase, trainer and stage, time used and left, with a bar."""

    def show(self, phase: str, stage: str = "", elapsed_s: float | None = None, duration_s: float = 0.0,
             phase_s: float | None = None) -> None:
        parts = [f"[b]{phase}[/b]" + (f" {phase_s:.0f} s" if phase_s is not None else "")]
        if stage:
            parts.append(stage)
        if elapsed_s is not None:
            filled = round(8 * min(1.0, elapsed_s / duration_s)) if duration_s else 0
            bar = f"{'█' * filled}{'░' * (8 - filled)} " if duration_s else ""
            parts.append(bar + timing_text(elapsed_s, duration_s))
        self.update(" · ".join(parts))


class Chart(PlotextPlot):
    """A time chart of one quantity for each run; its title is the border title, its legend the subtitle
    (in the lines' colours), so no legend box covers the data."""

    def __init__(self, title: str, ylabel: str, xlabel: str = "time", **kwargs):
        super().__init__(**kwargs)
        self.ylabel, self.xlabel = ylabel, xlabel
        self.title = title
        self.drawn: dict[str, list[tuple[float, float]]] = {}  # what the last draw plotted, by line

    @property
    def title(self) -> str:
        return str(self.border_title)

    @title.setter
    def title(self, text: str) -> None:
        self.border_title = text

    def draw(self, lines: list[tuple[str, list[float], list[float]]], ylim: tuple[float, float] | None = None,
             xmax: float | None = None, log_y: bool = False) -> None:
        """Each line is (name, x, y); x in seconds when `xlabel` is "time" (shown as minutes past 5 minutes)."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        in_minutes = self.xlabel == "time" and max([*(max(xs, default=0) for _, xs, _ in lines), xmax or 0]) > 300
        scale = 60.0 if in_minutes else 1.0
        plt.xlabel(("minutes" if in_minutes else "seconds") if self.xlabel == "time" else self.xlabel)
        legend, self.drawn = [], {}
        for index, (label, xs, ys) in enumerate(lines):
            points = [(x / scale, y) for x, y in zip(xs, ys) if y is not None and not math.isnan(y) and not (log_y and y <= 0)]
            if not points:
                continue
            self.drawn[label] = points
            colour = line_colour(label, index)
            plt.plot([p[0] for p in points], [p[1] for p in points], marker="braille", color=colour)
            legend.append(f"[{colour}]━ {label}[/]")
        if ylim:
            plt.ylim(*ylim)
        if xmax:
            plt.xlim(0, xmax / scale)
        if log_y and legend:
            plt.yscale("log")
        if not legend:
            plt.title("waiting for data")
        self.border_subtitle = "  ".join(legend)
        self.refresh()


def line_colour(label: str, index: int) -> str:
    for trainer, colour in TRAINER_COLOURS.items():
        if label.startswith(trainer):
            return colour if "val" not in label else ("red" if trainer == "original" else "green")
    return EXTRA_COLOURS[index % len(EXTRA_COLOURS)]


class SeedChart(PlotextPlot):
    """A verdict at a glance: each seed's score as a point, beside its side's IQM and 95 % interval."""

    def draw(self, verdict: dict) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        sides = list(verdict["sides"].items())
        for index, (label, side) in enumerate(sides, start=1):
            colour = line_colour(label, index - 1)
            plt.scatter([index - 0.15] * len(side["runs"]), side["runs"], color=colour, marker="dot")
            plt.plot([index + 0.15] * 2, list(side["interval"]), color=colour, marker="braille")
            plt.scatter([index + 0.15], [side["iqm"]], color=colour, marker="x")
        plt.xticks(list(range(1, len(sides) + 1)), [label for label, _ in sides])
        plt.xlim(0.5, len(sides) + 0.5)
        self.border_title = f"{verdict['measure']}: seeds (•), IQM (x) and 95% interval"
        self.refresh()


class ChartGrid(Grid):
    """Throughput (log scale once two trainers differ tenfold), device use (0–100), Sharpe, portfolio;
    one shared time axis. A short terminal shows the first two."""

    CHARTS = (("throughput", "Throughput (episodes/min)", "eps/min"), ("sharpe", "Sharpe (train; val score)", "Sharpe"),
              ("device", "CPU use (%)", "%"), ("portfolio", "Portfolio value ($)", "$"))

    def compose(self) -> ComposeResult:
        for chart_id, title, ylabel in self.CHARTS:
            yield Chart(title, ylabel, id=f"chart-{chart_id}")

    def draw(self, series: dict[str, Series], device_label: str = "CPU") -> None:
        xmax = max((s.seconds[-1] for s in series.values() if s.seconds), default=None)
        rates = [max(s.episodes_per_min) for s in series.values() if s.episodes_per_min]
        spread = len(rates) > 1 and min(rates) > 0 and max(rates) / min(rates) >= 10
        throughput = self.query_one("#chart-throughput", Chart)
        throughput.title = "Throughput (episodes/min, log scale)" if spread else "Throughput (episodes/min)"
        throughput.draw([(name, s.seconds, s.episodes_per_min) for name, s in series.items()], xmax=xmax, log_y=spread)
        lines = []
        for name, s in series.items():
            lines.append((name, s.seconds, s.train_sharpe))
            lines.append((f"{name} val", s.val_seconds, s.val_sharpe))
        self.query_one("#chart-sharpe", Chart).draw(lines, xmax=xmax)
        device = self.query_one("#chart-device", Chart)
        device.title = f"{device_label} use (%)"
        device.draw([(name, s.seconds, s.utilisation) for name, s in series.items()], ylim=(0, 100), xmax=xmax)
        self.query_one("#chart-portfolio", Chart).draw([(name, s.seconds, s.portfolio) for name, s in series.items()], xmax=xmax)
