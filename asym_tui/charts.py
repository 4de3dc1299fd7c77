"""Charts (plotext): a time chart per quantity, the grid of the main screen, and the seeds of a verdict.

Titles and legends live in the chart's border and are chosen to fit it: a short title and abbreviated
legend on a narrow terminal rather than one cut to an ellipsis.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid
from textual_plotext import PlotextPlot

from asym_tui.widgets import Series

TRAINER_COLOURS = {"original": "orange", "optimized": "cyan"}  # one colour per trainer in every chart and legend
VALIDATION_COLOURS = {"original": "red", "optimized": "green"}
# The baselines' colours, the same hues as report.png's (engine/report.py COLOURS): the agent takes its trainer's.
POLICY_COLOURS = {"buy-and-hold": "green", "trailing rule": "magenta", "best constant": "yellow", "flat": "gray", "random": "red"}
EXTRA_COLOURS = ("magenta", "green", "yellow", "red")
ABBREVIATIONS = {"original": "orig", "optimized": "opt", "buy-and-hold": "B&H"}
BORDER_ROOM = 6  # a border title or subtitle leaves this many cells of the border's width to the corners and rules


def line_colour(label: str, index: int) -> str:
    """A trainer's colour (validation lines in their own), a baseline's, else one of the extra colours."""
    for trainer, colour in TRAINER_COLOURS.items():
        if label.startswith(trainer):
            return VALIDATION_COLOURS[trainer] if label.endswith(" val") else colour
    policy = label.replace("_", " ").replace("buy and hold", "buy-and-hold")
    return POLICY_COLOURS.get(policy, EXTRA_COLOURS[index % len(EXTRA_COLOURS)])


def abbreviated(label: str) -> str:
    first, _, rest = label.partition(" ")
    return " ".join([ABBREVIATIONS.get(first, first), *([rest] if rest else [])])


def legend_text(entries: list[tuple[str, str]], width: int) -> str:
    """"━ name" per line in its colour: whole names if they fit, else abbreviated, else validation lines as "v",
    else one entry per colour (a side's seeds share theirs) named by its first word."""
    by_colour = {colour: abbreviated(label).split(" ")[0] for label, colour in reversed(entries)}
    stages = (
        "  ".join(f"[{colour}]━ {label}[/]" for label, colour in entries),
        " ".join(f"[{colour}]━ {abbreviated(label)}[/]" for label, colour in entries),
        " ".join(f"[{colour}]━{'v' if label.endswith(' val') else abbreviated(label)}[/]" for label, colour in entries),
        " ".join(f"[{colour}]━ {name}[/]" for colour, name in reversed(by_colour.items())),
    )
    return next((stage for stage in stages if Text.from_markup(stage).cell_len <= width), stages[-1])


class Chart(PlotextPlot):
    """A time chart of one quantity for each run; its title is the border title, its legend the subtitle
    (in the lines' colours), so no legend box covers the data."""

    def __init__(self, title: str, ylabel: str, xlabel: str = "time", short_title: str | None = None, integer_x: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.ylabel, self.xlabel, self.integer_x = ylabel, xlabel, integer_x  # integer_x: a tick at each whole x (folds)
        self.full_title, self.short_title = title, short_title or title
        self.legend: list[tuple[str, str]] = []
        self.drawn: dict[str, list[tuple[float, float]]] = {}  # what the last draw plotted, by line
        self.last_draw: tuple | None = None
        self.fit_border()

    @property
    def title(self) -> str:
        return self.full_title

    @title.setter
    def title(self, text: str | tuple[str, str]) -> None:
        """A title, or (title, short title for a narrow chart)."""
        self.full_title, self.short_title = (text, text) if isinstance(text, str) else text
        self.fit_border()

    def on_resize(self) -> None:
        if self.last_draw is not None:  # plotext keeps traces of the size it was built at: build again at this one
            self.draw(*self.last_draw)
        self.fit_border()

    def fit_border(self) -> None:
        room = self.size.width - BORDER_ROOM if self.size.width else 10_000
        self.border_title = self.full_title if len(self.full_title) <= room else self.short_title
        self.border_subtitle = legend_text(self.legend, room) if self.legend else ""

    def draw(self, lines: list[tuple[str, list[float], list[float]]], ylim: tuple[float, float] | None = None,
             xmax: float | None = None, log_y: bool = False) -> None:
        """Each line is (name, x, y); x in seconds when `xlabel` is "time" (shown as minutes past 5 minutes)."""
        self.last_draw = (lines, ylim, xmax, log_y)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        in_minutes = self.xlabel == "time" and max([*(max(xs, default=0) for _, xs, _ in lines), xmax or 0]) > 300
        scale = 60.0 if in_minutes else 1.0
        plt.xlabel(("minutes" if in_minutes else "seconds") if self.xlabel == "time" else self.xlabel)
        self.legend, self.drawn = [], {}
        for index, (label, xs, ys) in enumerate(lines):
            points = [(x / scale, y) for x, y in zip(xs, ys) if y is not None and not math.isnan(y) and not (log_y and y <= 0)]
            if not points:
                continue
            self.drawn[label] = points
            colour = line_colour(label, index)
            plt.plot([p[0] for p in points], [p[1] for p in points], marker="braille", color=colour)
            self.legend.append((label, colour))
        if self.integer_x and self.drawn:
            plt.xticks(sorted({x for points in self.drawn.values() for x, _ in points}))
        if ylim:
            plt.ylim(*ylim)
        if xmax:
            plt.xlim(0, xmax / scale)
        if log_y and self.legend:
            plt.yscale("log")
        if not self.legend:
            plt.title("waiting for data")
        self.fit_border()
        self.refresh()


class SeedChart(PlotextPlot):
    """A verdict at a glance: each seed's score as a point, beside its side's IQM and 95 % interval."""

    titles: tuple[str, ...] = ("seeds •, IQM x, 95% interval",)
    verdict: dict | None = None
    legend: list[tuple[str, str]] = []

    def on_resize(self) -> None:
        if self.verdict is not None:  # built again at the new size (see Chart.on_resize)
            self.draw(self.verdict)

    def fit_border(self) -> None:
        room = self.size.width - BORDER_ROOM if self.size.width else 10_000
        self.border_title = next((title for title in self.titles if len(title) <= room), self.titles[-1])
        self.border_subtitle = legend_text(self.legend, room)

    def draw(self, verdict: dict) -> None:
        self.verdict = verdict
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        sides = list(verdict["sides"].items())
        for index, (label, side) in enumerate(sides, start=1):
            colour = line_colour(label, index - 1)
            plt.scatter([index - 0.15] * len(side["runs"]), side["runs"], color=colour, marker="dot")
            plt.plot([index + 0.15] * 2, list(side["interval"]), color=colour, marker="braille")
            plt.scatter([index + 0.15], [side["iqm"]], color=colour, marker="x")
        plt.xticks([])  # the sides are named in the legend, by colour (tick labels under the points drift by a cell)
        plt.xlim(0.5, len(sides) + 0.5)
        self.legend = [(label, line_colour(label, index)) for index, (label, _) in enumerate(sides)]
        self.titles = (f"{verdict['measure']}: seeds •, IQM x, 95% interval", "seeds •, IQM x, 95% interval", "seeds, IQM, interval")
        self.fit_border()
        self.refresh()


class ChartGrid(Grid):
    """Throughput (log scale once two trainers differ tenfold), Sharpe, device use (0–100), portfolio;
    one shared time axis. A short terminal shows the first two."""

    CHARTS = (("throughput", ("Throughput (episodes/min)", "Episodes/min"), "eps/min"),
              ("sharpe", ("Sharpe (train; val score)", "Sharpe (train; val)"), "Sharpe"),
              ("device", ("CPU use (%)", "CPU %"), "%"), ("portfolio", ("Portfolio value ($)", "Portfolio $"), "$"))

    def compose(self) -> ComposeResult:
        for chart_id, (title, short), ylabel in self.CHARTS:
            yield Chart(title, ylabel, short_title=short, id=f"chart-{chart_id}")

    def draw(self, series: dict[str, Series], device_label: str = "CPU") -> None:
        xmax = max((s.seconds[-1] for s in series.values() if s.seconds), default=None)
        rates = [max(s.episodes_per_min) for s in series.values() if s.episodes_per_min]
        spread = len(rates) > 1 and min(rates) > 0 and max(rates) / min(rates) >= 10
        throughput = self.query_one("#chart-throughput", Chart)
        throughput.title = ("Throughput (episodes/min, log scale)", "Episodes/min (log)") if spread else self.CHARTS[0][1]
        throughput.draw([(name, s.seconds, s.episodes_per_min) for name, s in series.items()], xmax=xmax, log_y=spread)
        lines = []
        for name, s in series.items():
            lines.append((name, s.seconds, s.train_sharpe))
            lines.append((f"{name} val", s.val_seconds, s.val_sharpe))
        self.query_one("#chart-sharpe", Chart).draw(lines, xmax=xmax)
        device = self.query_one("#chart-device", Chart)
        device.title = (f"{device_label} use (%)", f"{device_label} %")
        device.draw([(name, s.seconds, s.utilisation) for name, s in series.items()], ylim=(0, 100), xmax=xmax)
        self.query_one("#chart-portfolio", Chart).draw([(name, s.seconds, s.portfolio) for name, s in series.items()], xmax=xmax)
