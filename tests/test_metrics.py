import math

import numpy as np
import pytest

from engine.metrics import compute_metrics, episode_sharpe, max_drawdown, periods_per_year, trade_returns

FIVE_MINUTES = 300.0


def test_periods_per_year_for_five_minute_bars_on_a_24_7_market():
    assert periods_per_year(FIVE_MINUTES) == 105_120
    assert math.sqrt(periods_per_year(FIVE_MINUTES)) == pytest.approx(324.22, abs=0.01)
    assert periods_per_year(86_400) == 365


def test_metrics_against_hand_computed_values():
    equity = np.array([100.0, 110.0, 99.0, 108.9, 108.9])
    # returns: +10 %, -10 %, +10 %, 0 %
    r = np.array([0.1, -0.1, 0.1, 0.0])
    mean, std = 0.025, math.sqrt(((r - 0.025) ** 2).sum() / 3)
    downside = math.sqrt(0.01 / 4)
    m = compute_metrics(equity, FIVE_MINUTES)
    assert m["total_return"] == pytest.approx(0.089)
    assert m["sharpe"] == pytest.approx(mean / std * math.sqrt(105_120))
    assert m["sortino"] == pytest.approx(mean / downside * math.sqrt(105_120))
    assert m["volatility"] == pytest.approx(std * math.sqrt(105_120))
    assert m["max_drawdown"] == pytest.approx(-0.1)
    assert m["cagr"] == math.inf  # +8.9 % in 20 minutes annualizes past float range


def test_drawdown_includes_the_start_value_and_calmar():
    equity = np.array([100.0, 90.0, 95.0, 120.0])
    assert max_drawdown(equity) == pytest.approx(-0.10)
    days = 86_400.0
    m = compute_metrics(equity, days)  # daily bars: 3 bars = 3/365 years
    expected_cagr = 1.2 ** (365 / 3) - 1
    assert m["cagr"] == pytest.approx(expected_cagr)
    assert m["calmar"] == pytest.approx(expected_cagr / 0.10)


def test_flat_equity_has_zero_ratios_not_nan():
    m = compute_metrics(np.ones(50), FIVE_MINUTES, np.zeros(49))
    assert m["sharpe"] == m["sortino"] == m["calmar"] == m["max_drawdown"] == 0.0
    assert m["trades"] == 0 and m["exposure"] == 0.0


def test_trades_win_rate_and_exposure():
    equity = np.array([1.0, 1.0, 1.1, 1.2, 1.2, 1.1, 1.0, 1.0])
    levels = np.array([0, 1, 1, 0, -1, -1, 0])  # a long trade that wins, a short trade that loses
    trades = trade_returns(equity, levels)
    np.testing.assert_allclose(trades, [0.2, 1.0 / 1.2 - 1])
    m = compute_metrics(equity, FIVE_MINUTES, levels)
    assert m["trades"] == 2 and m["win_rate"] == 0.5 and m["exposure"] == pytest.approx(4 / 7)


def test_episode_sharpe_annualizes_by_episode_length():
    returns = np.array([0.01, -0.005, 0.02, 0.0])
    expected = returns.mean() / returns.std(ddof=1) * math.sqrt(105_120 / 500)
    assert episode_sharpe(returns, 500, FIVE_MINUTES) == pytest.approx(expected)
