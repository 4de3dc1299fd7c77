"""The main screen's parts besides controls and charts: status line, key numbers, PPO diagnostics, log.
Each only shows state it is given, fitted to its width: fields are dropped whole, never cut."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid
from textual.widgets import RichLog, Static

from asym_tui.tables import clock, number, timing_text
from engine.events import Progress, RunSummary

Part = tuple[int, list[str]]  # (rank: higher ranks shorten first, its texts from longest to shortest; "" drops it)


def fit_parts(parts: list[Part], width: int, separator: str = " · ") -> str:
    """The parts joined, each shortened or dropped in rank order (highest first) until the line fits `width`."""
    choice = [0] * len(parts)

    def line() -> str:
        return separator.join(texts[c] for (_, texts), c in zip(parts, choice) if texts[c])

    for index in sorted(range(len(parts)), key=lambda i: -parts[i][0]):
        while Text.from_markup(line()).cell_len > width and choice[index] < len(parts[index][1]) - 1:
            choice[index] += 1
    return line()


def compact(value: float | None, prefix: str = "") -> str:
    """A figure that fits a small card: 1,234 · 12.3k · 1.23M."""
    if value is None or math.isnan(value):
        return "N/A"
    for threshold, size, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(value) >= threshold:
            return f"{prefix}{value / size:.3g}{suffix}"
    return f"{prefix}{value:,.0f}"


def memory_text(megabytes: float | None) -> str:
    if megabytes is None:
        return "N/A"
    return f"{megabytes / 1024:.1f} GB" if megabytes >= 1024 else f"{megabytes:,.0f} MB"


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
POLICY_CARDS = ("portfolio", "return", "Sharpe", "max-DD")
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
    source (train episodes, validation, test) under each figure."""

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
        sources = dict.fromkeys(POLICY_CARDS, "")
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
        """A finished run: its throughput, and the chosen model's test backtest, labelled 'test' — or "flat",
        "no edge" when selection found none (the policy held flat: no figure to show as if it traded)."""
        agent, throughput = summary.test.get("agent") or {}, summary.throughput
        portfolio = summary.final_portfolio
        values = {"episodes-min": compact(throughput.episodes_per_min), "steps-s": compact(throughput.steps_per_s),
                  "updates": number(throughput.optimizer_steps_per_s, "{:,.1f}"),
                  "device": number(summary.resources.utilisation_mean, "{:.0f}%"),
                  "memory": memory_text(summary.resources.peak_memory_mb), "episodes": compact(float(throughput.episodes)),
                  "portfolio": compact(portfolio, "$") if portfolio is not None else "N/A",
                  "return": number(None if portfolio is None else 100 * (portfolio / initial_equity - 1), "{:+.2f}%"),
                  "Sharpe": number(agent.get("sharpe")), "max-DD": number(agent.get("max_drawdown") and 100 * agent["max_drawdown"], "{:.1f}%")}
        source = "test"
        if no_edge(summary):
            values.update(dict.fromkeys(POLICY_CARDS, "flat"))
            source = "no edge"
        self.fill(values, {**dict.fromkeys(POLICY_CARDS, source), "device": "mean", "memory": "peak"})

    def fill(self, values: dict[str, str], subtitles: dict[str, str]) -> None:
        for key, value in values.items():
            self.query_one(f"#key-{key}", KeyNumber).show(value, subtitles.get(key, ""))


def no_edge(summary: RunSummary) -> bool:
    """Selection found no edge on validation: the chosen policy holds flat."""
    return bool((summary.selected_model or {}).get("no_edge"))


class StatusLine(Static):
    """What is happening now (phase, trainer and stage, time used and left, fees) in one line that drops
    or shortens its least important parts to fit."""

    parts: list[Part] = []

    def show(self, phase: str, stage: str = "", elapsed_s: float | None = None, duration_s: float = 0.0,
             phase_s: float | None = None, fees: str = "") -> None:
        parts: list[Part] = [(0, [f"[b]{phase}[/b]" + (f" {phase_s:.0f} s" if phase_s is not None else "")])]
        if stage:
            parts.append((2, [stage, ""]))
        if elapsed_s is not None:
            parts.append((3, timing_texts(elapsed_s, duration_s)))
        if fees:
            parts.append((5, [fees, ""]))
        self.show_parts(parts)

    def show_done(self, what: str, reason: str = "", notes: tuple[str, ...] = (), elapsed_s: float | None = None,
                  fees: str = "") -> None:
        """A finished launch: "done · optimized completed (duration reached) · flat (no edge) · 0:48 · spot-taker"."""
        parts: list[Part] = [(0, ["[b]done[/b]"]), (1, [f"{what} ({reason})", what] if reason else [what])]
        parts += [(1, [note]) for note in notes]
        if elapsed_s is not None:
            parts.append((4, [clock(elapsed_s), ""]))
        if fees:
            parts.append((5, [fees, ""]))
        self.show_parts(parts)

    def show_parts(self, parts: list[Part]) -> None:
        self.parts = parts
        self.update(fit_parts(parts, self.content_size.width or 10_000))

    def on_resize(self) -> None:
        self.update(fit_parts(self.parts, self.content_size.width or 10_000))


def timing_texts(elapsed_s: float, duration_s: float) -> list[str]:
    """Time used against the duration, with a bar, from the whole to the least ("0:48")."""
    if not duration_s:
        return [clock(elapsed_s)]
    filled = round(8 * min(1.0, elapsed_s / duration_s))
    bar = f"{'█' * filled}{'░' * (8 - filled)} "
    full, short = timing_text(elapsed_s, duration_s), f"{clock(elapsed_s)}/{clock(duration_s)}"
    return [bar + full, full, bar + short, short, clock(elapsed_s)]


# Progress field: (label, format, rank: higher ranks drop first on a narrow screen)
DIAGNOSTICS = {"approx_kl": ("KL", "{:.3f}", 1), "clip_fraction": ("clip", "{:.2f}", 1), "entropy": ("entropy", "{:.2f}", 2),
               "explained_variance": ("expl. var", "{:.2f}", 2), "policy_loss": ("policy loss", "{:.3f}", 4),
               "value_loss": ("value loss", "{:.3f}", 4), "learning_rate": ("lr", "{:.1e}", 3)}


class Diagnostics(Static):
    """The latest update's PPO diagnostics in one line; the hints for those outside their usual range under
    it where there is room (else counted, and the app logs each hint once)."""

    values: list[Part] = []
    hints: list[str] = []
    show_hints = True

    def show(self, event: Progress | None, hints: list[str]) -> None:
        measured = {name: getattr(event, name, math.nan) for name in DIAGNOSTICS} if event else {}
        self.values = [(rank, [f"{label} {pattern.format(value)}", ""]) for name, (label, pattern, rank) in DIAGNOSTICS.items()
                       if not math.isnan(value := measured.get(name, math.nan))]
        self.hints = hints
        self.display = bool(self.values)
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        width = self.content_size.width
        if not width:  # not laid out yet: on_resize draws it
            return
        if not self.hints:
            self.update(fit_parts(self.values, width, "  "))
        elif self.show_hints:
            self.update(fit_parts(self.values, width, "  ") + "".join(f"\n[yellow]⚠ {hint}[/]" for hint in self.hints))
        else:
            count = f"[yellow]⚠ {len(self.hints)} out of range (log)[/]"
            self.update(fit_parts([*self.values, (0, [count])], width, "  "))


class LogPanel(RichLog):
    """The log, with timestamps; it wraps its lines again whenever its width changes (a resize, or `l`)."""

    def __init__(self, max_lines: int = 500, **kwargs):
        super().__init__(markup=True, wrap=True, max_lines=max_lines, min_width=20, **kwargs)
        self.entries: deque[str] = deque(maxlen=max_lines)
        self.wrapped_width = 0

    def add(self, text: str) -> None:
        self.entries.append(text)
        self.write(text)

    def on_resize(self) -> None:
        width = self.scrollable_content_region.width
        if self.wrapped_width and width != self.wrapped_width:
            self.clear()
            for text in self.entries:
                self.write(text)
        self.wrapped_width = width
