import os

import numpy as np
import pandas as pd
import pytest

from engine.synthetic import generate_candles

os.environ["COLUMNS"] = "220"  # rich tables in captured output: wide enough not to truncate


@pytest.fixture(scope="session")
def small_candles() -> pd.DataFrame:
    """Three days of synthetic 5-minute candles."""
    return generate_candles(days=3, seed=3)


def binance_rows(candles: pd.DataFrame, time_unit: str = "ms") -> pd.DataFrame:
    """The 12-column Binance kline layout of `candles`, open/close times in ms or µs."""
    scale = {"ms": 10**6, "us": 10**3}[time_unit]
    open_time = candles["timestamp"].dt.as_unit("ns").astype("int64").to_numpy() // scale
    step = 300_000 if time_unit == "ms" else 300_000_000
    return pd.DataFrame({
        "open_time": open_time, "open": candles["open"], "high": candles["high"], "low": candles["low"],
        "close": candles["close"], "volume": candles["volume"], "close_time": open_time + step - 1,
        "quote_volume": candles["quote_volume"], "trades": 100, "taker_buy_base": 1.0, "taker_buy_quote": 1.0, "ignore": 0,
    })


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# One decision per bar (action_repeat 1): the mechanics tests count steps and episodes per decision;
# tests/test_ppo.py covers repeated actions.
TINY_RUN = dict(data="synthetic:days=8,seed=3", macro_window=64, micro_window=16, episode_steps=32, num_envs=8,
                min_num_envs=2, eval_every_s=0, duration_s=0, max_episodes=48, progress_every_s=0, unseen_series=0, action_repeat=1)


@pytest.fixture
def tiny_config(tmp_path):
    """A run config that trains in about a second on a CPU."""
    from engine.config import load_config

    def make(**overrides):
        return load_config(None, {**TINY_RUN, "out_dir": str(tmp_path / "runs"), **overrides})
    return make


@pytest.fixture(scope="session")
def tiny_splits():
    from engine.config import load_config
    from engine.runs import prepare_data

    return prepare_data(load_config(None, TINY_RUN))


@pytest.fixture(autouse=True)
def isolated_user_presets(tmp_path, monkeypatch):
    """User presets go to a fresh folder per test, so tests never see a developer's own presets."""
    monkeypatch.setenv("ASYM_TUI_CONFIG_DIR", str(tmp_path / "config"))
