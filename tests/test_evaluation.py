"""The table walk that backtests every policy is the environment's own rules: checked step for step
against `TradingEnv` on several segments, with fees, shorts off, and a ruin."""

import dataclasses

import numpy as np
import pytest

from engine.env import EnvConfig
from engine.evaluation import LEVELS, _run, _whole_split_env, action_table, table_backtest, target_table
from engine.features import Features, concatenate


def two_segments(split: Features) -> Features:
    half = len(split) // 2
    return concatenate([split.rows(slice(0, half)), split.rows(slice(half + 7, len(split)))])


def through_the_env(split: Features, config: EnvConfig, next_level: np.ndarray):
    table = np.clip(next_level, config.min_level, 1)
    choose = lambda step, env: {1: 1, -1: 2, 0: 0}[int(table[env.row, env.level + 1]) - env.level]
    return _run(_whole_split_env(split, config), choose, 300.0)


@pytest.mark.parametrize("allow_short", [True, False])
def test_table_walk_equals_stepping_the_environment(tiny_splits, allow_short):
    split = two_segments(tiny_splits.validation)
    config = EnvConfig(allow_short=allow_short, position_size=0.7)
    rng = np.random.default_rng(4)
    for next_level in (action_table(rng.integers(0, 3, size=(len(split), 3))), target_table(rng.integers(-1, 2, size=len(split)))):
        fast, slow = table_backtest(split, config, 300.0, next_level), through_the_env(split, config, next_level)
        np.testing.assert_array_equal(fast.levels, slow.levels)
        np.testing.assert_array_equal(fast.equity, slow.equity)
        assert fast.metrics == slow.metrics


def test_table_walk_stops_at_ruin_like_the_environment(tiny_splits):
    split = two_segments(tiny_splits.validation)
    close = split.close.copy()
    close[40:] *= 1e-7  # a crash a long position cannot survive
    crashed = dataclasses.replace(split, close=close)
    always_long = target_table(np.ones(len(split), dtype=int))
    fast, slow = table_backtest(crashed, EnvConfig(), 300.0, always_long), through_the_env(crashed, EnvConfig(), always_long)
    assert len(fast.equity) == len(slow.equity) < len(split)
    np.testing.assert_array_equal(fast.equity, slow.equity)
    np.testing.assert_array_equal(fast.levels, slow.levels)


def test_levels_are_the_columns_of_a_table():
    assert LEVELS == (-1, 0, 1)
    np.testing.assert_array_equal(target_table(np.array([1, -1])), [[0, 1, 1], [-1, -1, 0]])
    np.testing.assert_array_equal(action_table(np.array([[0, 1, 2]])), [[-1, 1, 0]])
