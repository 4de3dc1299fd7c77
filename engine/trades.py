"""A backtest as the tables other tools read: positions per bar and the list of trades (`asym-tui eval --out`).

Positions (one row per bar, indexed by `timestamp` in UTC) have the columns vectorbt and quantstats take:
- `close`, and `position` = level x position_size, the fraction of equity held from this close to the
  next (vectorbt's `size` with `size_type="targetpercent"`), beside the `level` itself (-1, 0, +1);
- `entries`, `exits`, `short_entries`, `short_exits`: the same path as signals for
  `vectorbt.Portfolio.from_signals` (no rebalancing trades in between, like the environment);
- `equity`: the portfolio at this close, before this bar's trade (starting at the run's initial equity);
- `returns`: equity over the previous bar's, minus 1 (the previous bar's move and fees, realized at this
  close): the Series quantstats reads, with periods_per_year = 365 days / bar length (105,120 at 5 minutes).
Where the data holds several symbols, a `series` column names each row's symbol.

The environment's rules (engine/env.py): the level chosen at close t fills at close t and pays the fee
rate x position_size x equity on each step of the level. A trade is a maximal run of one non-zero
level, as `engine.metrics.trade_returns` counts them (its return is that function's): it enters at the
close of its first bar and exits at the close of the bar after its last, paying the fee both ways; a
trade still open at the end is marked to market there, without an exit fee (`status` open).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.env import EnvConfig, segment_lengths
from engine.evaluation import Backtest
from engine.features import Features
from engine.metrics import trade_returns


def positions_frame(backtest: Backtest, series: Features, env_config: EnvConfig, initial_equity: float = 1.0) -> pd.DataFrame:
    """Per-bar level, position, signals, equity and returns of a backtest over `series` (shorter after a ruin)."""
    bars = len(backtest.equity)
    held = backtest.levels
    level = np.append(held, held[-1] if len(held) else 0)  # the last bar has no next one: what is held stays, marked to market
    before = np.concatenate([[0], level[:-1]])
    frame = pd.DataFrame({"close": series.close[:bars], "level": level, "position": level * env_config.position_size,
                          "entries": (level == 1) & (before != 1), "exits": (before == 1) & (level != 1),
                          "short_entries": (level == -1) & (before != -1), "short_exits": (before == -1) & (level != -1),
                          "equity": backtest.equity * initial_equity,
                          "returns": np.concatenate([[0.0], backtest.equity[1:] / backtest.equity[:-1] - 1])},
                         index=_times(series)[:bars])
    names = _series_names(series)
    if names is not None:
        frame.insert(0, "series", names[:bars])
    return frame


def trades_frame(backtest: Backtest, series: Features, env_config: EnvConfig, initial_equity: float = 1.0) -> pd.DataFrame:
    """One row per trade: entry and exit time and price, side, bars held, return, profit and fees paid."""
    levels, equity = np.asarray(backtest.levels), backtest.equity
    edges = np.flatnonzero(np.diff(np.concatenate([[0], levels, [0]])))  # where a run of one level starts or ends
    spans = [(start, end) for start, end in zip(edges[:-1], edges[1:]) if levels[start] != 0]
    entries = np.array([start for start, _ in spans], dtype=np.int64)
    exits = np.array([end for _, end in spans], dtype=np.int64)
    returns = trade_returns(equity, levels, env_config.fee_rate, env_config.position_size)
    fee = env_config.fee_rate * env_config.position_size * initial_equity
    closed = exits < len(levels)
    times = _times(series)
    frame = pd.DataFrame({
        "entry_time": times[entries], "exit_time": times[exits],
        "side": np.where(levels[entries] > 0, "long", "short"),
        "entry_price": series.close[entries], "exit_price": series.close[exits], "bars": exits - entries,
        "return": returns, "pnl": equity[entries] * initial_equity * returns,
        "fees": fee * (equity[entries] + np.where(closed, equity[exits], 0.0)),
        "status": np.where(closed, "closed", "open"),
    })
    names = _series_names(series)
    if names is not None:
        frame.insert(0, "series", names[entries])
    return frame


def _times(series: Features) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(series.timestamps, name="timestamp").tz_localize("UTC")


def _series_names(series: Features) -> np.ndarray | None:
    """Each row's symbol where the rows hold several, else None."""
    if not series.segment_names or len(set(series.segment_names)) < 2:
        return None
    return np.repeat(np.asarray(series.segment_names), segment_lengths(series))
