"""The synthetic market is deterministic per seed and statistically realistic for 5-minute crypto bars.

Realistic range (documented in engine/synthetic.py): annualized volatility 30-120 %, excess kurtosis of
5-minute log returns > 1 (fat tails), lag-1 autocorrelation of |returns| > 0.1 (volatility clustering),
volume higher in the 14-16 h UTC window than in 02-04 h UTC (intraday seasonality).
"""

import numpy as np
import pandas as pd
import pytest

from engine.synthetic import generate_candles


def test_same_seed_same_candles_other_seed_other_candles():
    pd.testing.assert_frame_equal(generate_candles(days=5, seed=11), generate_candles(days=5, seed=11))
    assert not np.allclose(generate_candles(days=5, seed=11)["close"], generate_candles(days=5, seed=12)["close"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistics_in_a_realistic_range(seed):
    candles = generate_candles(days=60, seed=seed)
    returns = np.diff(np.log(candles["close"].to_numpy()))
    annual_volatility = returns.std() * np.sqrt(105_120)
    excess_kurtosis = ((returns - returns.mean()) ** 4).mean() / returns.var() ** 2 - 3
    magnitude = np.abs(returns)
    clustering = np.corrcoef(magnitude[1:], magnitude[:-1])[0, 1]
    hours = candles["timestamp"].dt.hour
    assert 0.3 < annual_volatility < 1.2
    assert excess_kurtosis > 1
    assert clustering > 0.1
    assert candles["volume"][hours.between(14, 15)].mean() > 1.5 * candles["volume"][hours.between(2, 3)].mean()
    assert (candles["high"] >= candles[["open", "close"]].max(axis=1)).all()
    assert (candles["low"] <= candles[["open", "close"]].min(axis=1)).all()


def test_regimes_carry_a_predictable_drift():
    candles = generate_candles(days=120, seed=5, with_regime=True)
    returns = np.diff(np.log(candles["close"].to_numpy()))
    regime = candles["regime"].to_numpy()[1:]
    assert returns[regime == 0].mean() > 0 > returns[regime == 1].mean()
