"""report.png: one page per run — test portfolio next to the baselines, returns, reward, update counts,
throughput and Sharpe over training time."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from engine.events import RunSummary  # noqa: E402

# One colour per policy, the hues of the app's charts (asym_tui/charts.py): the agent takes its trainer's colour
# (cyan optimized, orange original), buy-and-hold green, the trailing rule magenta, the best constant yellow.
AGENT_COLOURS = {"optimized": "tab:cyan", "original": "tab:orange"}
COLOURS = {"buy_and_hold": "tab:green", "trailing_rule": "tab:pink", "best_constant": "tab:olive", "flat": "tab:gray", "random": "tab:red"}
NO_TRADES = "no trades: the policy held flat"
PLOT_POINTS = 3000  # points per equity line: about five per pixel of the panel


def policy_colour(name: str, trainer: str) -> str:
    return AGENT_COLOURS.get(trainer, "tab:blue") if name == "agent" else COLOURS.get(name, "tab:brown")


def render_report(history: list[dict], test_backtests: dict, test_split, summary: RunSummary) -> bytes:
    """report.png as bytes: test equity and returns, reward, update counts, throughput, Sharpe."""
    figure = report_figure(history, test_backtests, test_split, summary)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def report_figure(history: list[dict], test_backtests: dict, test_split, summary: RunSummary):
    """The report's matplotlib figure (render_report saves it)."""
    figure, axes = plt.subplots(3, 2, figsize=(13, 11))
    (portfolio, returns), training_axes = axes[0], axes[1:].ravel()
    plot_test_equity(portfolio, test_backtests, pd.to_datetime(test_split.timestamps, utc=True), summary.trainer)
    plot_returns(returns, test_backtests["agent"].equity, policy_colour("agent", summary.trainer))
    plot_training(training_axes, pd.DataFrame([row for row in history if row.get("phase") == "training"]))
    sharpe = {name: summary.test_metric(name, "sharpe") for name in ("agent", "buy_and_hold")}
    sharpe = {name: math.nan if value is None else value for name, value in sharpe.items()}  # a flat agent's 0.00 stays 0.00
    figure.suptitle(f"{summary.trainer} run — test Sharpe agent {sharpe['agent']:.2f} vs buy-and-hold {sharpe['buy_and_hold']:.2f}")
    figure.tight_layout()
    return figure


def thinned(count: int) -> np.ndarray:
    """At most PLOT_POINTS evenly spaced bars, first and last included: a year's test split (100k bars) drawn
    whole takes Agg seconds for a panel about 600 pixels wide."""
    return np.unique(np.linspace(0, count - 1, min(count, PLOT_POINTS)).astype(np.int64))


def plot_test_equity(axis, test_backtests: dict, times: pd.DatetimeIndex, trainer: str) -> None:
    """Every policy's equity on the test split, each in its own colour, dates labelled without overlapping."""
    for name, backtest in test_backtests.items():
        bars = thinned(len(backtest.equity))
        axis.plot(times[bars], backtest.equity[bars], label=name.replace("_", " "), color=policy_colour(name, trainer), lw=1.2)
    locator = mdates.AutoDateLocator(minticks=2, maxticks=6)  # minticks 3 leaves ranges (2-3 days) no interval fits: a warning
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axis.set_title("Test split: equity (multiple of start)")
    axis.legend(fontsize=8)


def plot_returns(axis, equity: np.ndarray, colour: str) -> None:
    """The agent's per-bar returns; when it never traded, the panel says so instead of showing an empty axis."""
    bar_returns = np.diff(equity) / equity[:-1]
    traded = bar_returns[bar_returns != 0]
    axis.set_title("Test split: agent's per-bar returns (%), flat bars left out")
    if len(traded):
        axis.hist(traded * 100, bins=60, color=colour)
        return
    axis.text(0.5, 0.5, NO_TRADES, ha="center", va="center", transform=axis.transAxes, fontsize=12, color="tab:gray")
    axis.set_xticks([])
    axis.set_yticks([])


def plot_training(axes, frame: pd.DataFrame) -> None:
    """Reward, update counts, throughput and Sharpe against minutes of training."""
    reward, updates, throughput, sharpe = axes
    if frame.empty:
        return
    minutes = frame["elapsed_s"] / 60
    reward.plot(minutes, frame["mean_reward"], color="tab:green")
    reward.set_title("Mean reward per step")
    updates.plot(minutes, frame["micro_updates"], label="MicroNet updates", color="tab:blue")
    updates.plot(minutes, frame["macro_updates"], label="MacroNet updates", color="tab:purple")
    updates.legend(fontsize=8)
    updates.set_title("Update counts (1 : macro_every)")
    throughput.plot(minutes, frame["episodes_per_min"], color="tab:purple")
    throughput.set_title("Throughput (episodes / min)")
    sharpe.plot(minutes, frame["train_sharpe"], label="training (rolling)", color="tab:blue")
    if frame["val_sharpe"].notna().any():
        sharpe.plot(minutes, frame["val_sharpe"], label="validation", drawstyle="steps-post", color="tab:red")
    sharpe.legend(fontsize=8)
    sharpe.set_title("Sharpe (annualized)")
    for axis in axes:
        axis.set_xlabel("minutes")
