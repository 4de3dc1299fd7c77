"""Performance metrics of an equity curve, annualized for markets that trade 24/7.

Every Sharpe carries its probabilistic Sharpe ratio (`psr`, engine/stats.py): P(true Sharpe > 0).
Periods per year = 365 days / bar length: 105,120 for 5-minute bars (sqrt = 324.2). Volatility uses
the sample standard deviation of simple per-bar returns; Sharpe and Sortino assume a zero risk-free
rate; Sortino's downside deviation is sqrt(mean(min(r, 0)^2)) over all bars; the maximum drawdown
includes the starting value and is reported as a negative fraction.
"""

from __future__ import annotations

import numpy as np

from engine.stats import probabilistic_sharpe

SECONDS_PER_YEAR = 365 * 24 * 3600


def periods_per_year(bar_seconds: float) -> float:
    return SECONDS_PER_YEAR / bar_seconds


def max_drawdown(equity: np.ndarray) -> float:
    peaks = np.maximum.accumulate(equity)
    return float((equity / peaks - 1.0).min())


def trade_returns(equity: np.ndarray, levels: np.ndarray, fee_rate: float = 0.0, position_size: float = 1.0) -> np.ndarray:
    """Return of each trade: a maximal run of one non-zero exposure level.

    `levels[k]` is the level held during bar k, which moves equity[k] to equity[k+1]. A trade's return
    runs from the equity before its entry fee to the equity after its exit fee (the exit fee of
    `fee_rate` x `position_size` is charged here; a trade still open at the end is marked to market).
    """
    levels = np.asarray(levels)
    returns = []
    k = 0
    while k < len(levels):
        if levels[k] == 0:
            k += 1
            continue
        end = k
        while end < len(levels) and levels[end] == levels[k]:
            end += 1
        exit_fee = fee_rate * position_size if end < len(levels) else 0.0
        returns.append(equity[end] / equity[k] * (1 - exit_fee) - 1)
        k = end
    return np.asarray(returns)


def compute_metrics(equity: np.ndarray, bar_seconds: float, levels: np.ndarray | None = None, fee_rate: float = 0.0, position_size: float = 1.0) -> dict[str, float]:
    """Total return, CAGR, volatility, Sharpe, Sortino, max drawdown, Calmar, trades, win rate, exposure and
    the fractions of bars spent long, short and flat."""
    equity = np.asarray(equity, dtype=np.float64)
    returns = equity[1:] / equity[:-1] - 1
    per_year = periods_per_year(bar_seconds)
    bars = len(returns)
    total_return = equity[-1] / equity[0] - 1
    years = bars / per_year
    with np.errstate(over="ignore"):  # a short, strong sample can annualize past float range: inf
        cagr = float(np.exp(np.log(equity[-1] / equity[0]) / years) - 1) if bars and equity[-1] > 0 else -1.0
    std = returns.std(ddof=1) if bars > 1 else 0.0
    downside = np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)) if bars else 0.0
    mean = returns.mean() if bars else 0.0
    drawdown = max_drawdown(equity)
    metrics = {
        "total_return": float(total_return),
        "cagr": float(cagr),
        "volatility": float(std * np.sqrt(per_year)),
        "sharpe": float(mean / std * np.sqrt(per_year)) if std > 0 else 0.0,
        "sortino": float(mean / downside * np.sqrt(per_year)) if downside > 0 else 0.0,
        "psr": probabilistic_sharpe(returns),  # P(true Sharpe > 0) given this many bars, their skew and kurtosis
        "max_drawdown": drawdown,
        "calmar": float(cagr / -drawdown) if drawdown < 0 else 0.0,
        "bars": bars,
    }
    if levels is not None:
        trades = trade_returns(equity, levels, fee_rate, position_size)
        metrics.update(
            trades=len(trades),
            win_rate=float((trades > 0).mean()) if len(trades) else 0.0,
            exposure=float(np.mean(np.asarray(levels) != 0)) if len(levels) else 0.0,
            long=float(np.mean(np.asarray(levels) > 0)) if len(levels) else 0.0,
            short=float(np.mean(np.asarray(levels) < 0)) if len(levels) else 0.0,
            flat=float(np.mean(np.asarray(levels) == 0)) if len(levels) else 0.0,
        )
    return metrics


def episode_sharpe(log_returns: np.ndarray, steps_per_episode: int, bar_seconds: float) -> float:
    """Annualized Sharpe from episode log returns (the rolling training Sharpe)."""
    log_returns = np.asarray(log_returns, dtype=np.float64)
    if len(log_returns) < 2 or log_returns.std(ddof=1) == 0:
        return 0.0
    return float(log_returns.mean() / log_returns.std(ddof=1) * np.sqrt(periods_per_year(bar_seconds) / steps_per_episode))
