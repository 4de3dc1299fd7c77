"""report.png: one page per run — test portfolio next to the baselines, returns, reward, update counts,
throughput and Sharpe over training time."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from engine.events import RunSummary  # noqa: E402

COLOURS = {"agent": "tab:blue", "buy_and_hold": "tab:orange", "flat": "tab:gray", "random": "tab:red"}


def render_report(history: list[dict], test_backtests: dict, test_split, summary: RunSummary) -> bytes:
    """report.png as bytes: test equity and returns, reward, update counts, throughput, Sharpe."""
    frame = pd.DataFrame([row for row in history if row.get("phase") == "training"])
    figure, axes = plt.subplots(3, 2, figsize=(13, 11))
    (portfolio, returns), (reward, updates), (throughput, sharpe) = axes
    times = pd.to_datetime(test_split.timestamps, utc=True)
    for name, backtest in test_backtests.items():
        count = len(backtest.equity)
        portfolio.plot(times[:count], backtest.equity, label=name.replace("_", " "), color=COLOURS.get(name), lw=1.2)
    portfolio.set_title("Test split: equity (multiple of start)")
    portfolio.legend(fontsize=8)
    agent = test_backtests["agent"].equity
    bar_returns = np.diff(agent) / agent[:-1]
    returns.hist(bar_returns[bar_returns != 0] * 100, bins=60, color=COLOURS["agent"])
    returns.set_title("Test split: agent's per-bar returns (%), flat bars left out")
    if not frame.empty:
        minutes = frame["elapsed_s"] / 60
        reward.plot(minutes, frame["mean_reward"], color="tab:green")
        reward.set_title("Mean reward per step")
        updates.plot(minutes, frame["micro_updates"], label="MicroNet updates")
        updates.plot(minutes, frame["macro_updates"], label="MacroNet updates")
        updates.legend(fontsize=8)
        updates.set_title("Update counts (1 : macro_every)")
        throughput.plot(minutes, frame["episodes_per_min"], color="tab:purple")
        throughput.set_title("Throughput (episodes / min)")
        sharpe.plot(minutes, frame["train_sharpe"], label="training (rolling)")
        if frame["val_sharpe"].notna().any():
            sharpe.plot(minutes, frame["val_sharpe"], label="validation", drawstyle="steps-post")
        sharpe.legend(fontsize=8)
        sharpe.set_title("Sharpe (annualized)")
        for axis in (reward, updates, throughput, sharpe):
            axis.set_xlabel("minutes")
    sharpe = {name: summary.test_metric(name, "sharpe") for name in ("agent", "buy_and_hold")}
    sharpe = {name: math.nan if value is None else value for name, value in sharpe.items()}  # a flat agent's 0.00 stays 0.00
    figure.suptitle(f"{summary.trainer} run — test Sharpe agent {sharpe['agent']:.2f} vs buy-and-hold {sharpe['buy_and_hold']:.2f}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
