"""report.png (issue 21 point 13): a colour per policy (the app's hues), date labels that do not overlap, and a
returns panel that says so when the agent never traded."""

from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.colors import to_hex

from asym_tui.charts import POLICY_COLOURS, TRAINER_COLOURS
from engine.evaluation import Backtest
from engine.events import RunSummary
from engine.report import AGENT_COLOURS, COLOURS, NO_TRADES, render_report, report_figure

BARS = 12 * 24 * 20  # twenty days of 5-minute bars: enough dates to crowd the axis
POLICIES = ("agent", "buy_and_hold", "flat", "random", "best_constant", "trailing_rule")
APP_HUE_IN_REPORT = {"cyan": "tab:cyan", "orange": "tab:orange", "green": "tab:green", "magenta": "tab:pink", "yellow": "tab:olive",
                     "gray": "tab:gray", "red": "tab:red"}


def backtests(agent_trades: bool) -> dict[str, Backtest]:
    rng = np.random.default_rng(0)
    walk = lambda: np.cumprod(np.r_[1.0, 1 + rng.normal(0, 1e-3, BARS)])
    result = {name: Backtest(walk(), np.zeros(BARS), {"sharpe": 0.5}) for name in POLICIES}
    if not agent_trades:
        result["agent"] = Backtest(np.ones(BARS + 1), np.zeros(BARS), {"sharpe": 0.0, "trades": 0})
    return result


def figure_for(agent_trades: bool = True):
    split = SimpleNamespace(timestamps=np.datetime64("2024-03-01") + np.arange(BARS + 1) * np.timedelta64(5, "m"))
    summary = RunSummary.from_json({"trainer": "optimized", "test": {"agent": {"sharpe": 0.5}, "buy_and_hold": {"sharpe": 0.4}}})
    history = [{"phase": "training", "elapsed_s": 6.0 * i, "mean_reward": 0.1, "micro_updates": i, "macro_updates": i,
                "episodes_per_min": 900.0, "train_sharpe": 1.0, "val_sharpe": np.nan} for i in range(1, 5)]
    return report_figure(history, backtests(agent_trades), split, summary)


@pytest.fixture
def figure():
    import matplotlib.pyplot as plt

    made = figure_for()
    yield made
    plt.close(made)


def test_every_policy_has_its_own_colour_the_apps_hue(figure):
    colours = {line.get_label(): to_hex(line.get_color()) for line in figure.axes[0].get_lines()}
    assert len(colours) == len(POLICIES) and len(set(colours.values())) == len(POLICIES)
    assert colours["agent"] == to_hex(AGENT_COLOURS["optimized"]) == to_hex(APP_HUE_IN_REPORT[TRAINER_COLOURS["optimized"]])
    for name in ("buy_and_hold", "trailing_rule", "best_constant", "flat", "random"):
        app_hue = POLICY_COLOURS[name.replace("_", " ").replace("buy and hold", "buy-and-hold")]
        assert to_hex(COLOURS[name]) == to_hex(APP_HUE_IN_REPORT[app_hue]), name


def test_date_labels_do_not_overlap(figure):
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in figure.axes[0].get_xticklabels() if label.get_text()]
    assert len(boxes) >= 3
    assert all(left.x1 <= right.x0 for left, right in zip(boxes, boxes[1:]))


def test_a_policy_that_never_traded_says_so_in_the_returns_panel():
    import matplotlib.pyplot as plt

    flat, traded = figure_for(agent_trades=False), figure_for(agent_trades=True)
    flat_panel, traded_panel = flat.axes[1], traded.axes[1]
    assert [text.get_text() for text in flat_panel.texts] == [NO_TRADES] and not flat_panel.patches
    assert not traded_panel.texts and traded_panel.patches  # a histogram of the bars it held a position
    plt.close(flat)
    plt.close(traded)


def test_render_report_is_a_png():
    split = SimpleNamespace(timestamps=np.datetime64("2024-03-01") + np.arange(BARS + 1) * np.timedelta64(5, "m"))
    summary = RunSummary.from_json({"trainer": "original", "test": {"agent": {"sharpe": 0.0}}})
    assert render_report([], backtests(False), split, summary).startswith(b"\x89PNG")
