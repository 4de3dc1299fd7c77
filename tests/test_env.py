import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from engine.env import BUY, HOLD, SELL, EnvConfig, TradingEnv, VectorizedTradingEnv
from engine.features import Features, concatenate, prepare_splits
from engine.synthetic import generate_candles

FEE = 0.001 + 0.0005


@pytest.fixture(scope="module")
def features():
    return prepare_splits(generate_candles(days=4, seed=2), 120, 30).train


def flat_features(rows=20, price=100.0):
    return Features(np.zeros((rows, 3), np.float32), np.zeros((rows, 3), np.float32), np.full(rows, price), np.zeros(rows, "datetime64[ns]"))


def test_gymnasium_env_checker_passes(features):
    check_env(TradingEnv(features, EnvConfig(episode_steps=50)), skip_render_check=True)


def test_round_trip_on_flat_price_loses_exactly_fees_twice():
    env = TradingEnv(flat_features(), EnvConfig(episode_steps=10))
    env.reset(options={"start": 0})
    env.step(BUY)
    _, _, _, _, info = env.step(SELL)
    assert info["equity"] == pytest.approx((1 - FEE) ** 2, rel=1e-12)
    assert info["level"] == 0


def test_fees_are_inside_the_reward():
    env = TradingEnv(flat_features(), EnvConfig(episode_steps=10, reward_scale=1.0))
    env.reset(options={"start": 0})
    _, reward, *_ = env.step(BUY)
    assert reward == pytest.approx(np.log(1 - FEE))
    _, reward, *_ = env.step(HOLD)
    assert reward == 0.0


def test_levels_clamp_and_short_can_be_disabled():
    env = TradingEnv(flat_features(), EnvConfig(episode_steps=10, allow_short=False))
    env.reset(options={"start": 0})
    levels = [env.step(a)[4]["level"] for a in (SELL, BUY, BUY, SELL, SELL)]
    assert levels == [0, 1, 1, 0, 0]
    env = TradingEnv(flat_features(), EnvConfig(episode_steps=10))
    env.reset(options={"start": 0})
    assert [env.step(a)[4]["level"] for a in (SELL, SELL, BUY, BUY, BUY)] == [-1, -1, 0, 1, 1]


def test_long_position_earns_the_price_move():
    features = flat_features()
    features.close[5:] = 110.0
    env = TradingEnv(features, EnvConfig(episode_steps=10, reward_scale=1.0))
    env.reset(options={"start": 3})
    env.step(BUY)  # fills at close_3 = 100, earns close_4 / close_3
    _, reward, *_, info = env.step(HOLD)  # earns 110 / 100
    assert info["equity"] == pytest.approx((1 - FEE) * 1.1)
    assert reward == pytest.approx(np.log(1.1))


def test_equity_never_negative_under_any_actions_even_extreme_moves():
    rng = np.random.default_rng(0)
    features = flat_features(400)
    features.close[:] = 100 * np.exp(np.cumsum(rng.normal(0, 0.3, 400)))  # wild prices
    features.close[200] = features.close[199] * 5  # a bar that ruins a short
    env = TradingEnv(features, EnvConfig(episode_steps=399))
    for episode in range(20):
        env.reset(seed=episode)
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(int(rng.integers(3)))
            assert info["equity"] >= 0 and np.isfinite(reward)
            done = terminated or truncated


def test_episode_length_and_random_starts(features):
    env = TradingEnv(features, EnvConfig(episode_steps=100))
    starts = {env.reset(seed=s)[1]["row"] for s in range(10)}
    assert len(starts) > 5
    steps, done = 0, False
    while not done:
        *_, terminated, truncated, _ = env.step(HOLD)
        steps, done = steps + 1, terminated or truncated
    assert steps == 100


@pytest.mark.parametrize("config", [EnvConfig(episode_steps=60), EnvConfig(episode_steps=60, allow_short=False, position_size=0.5),
                                    EnvConfig(episode_steps=60, reward="seed")])
def test_vectorized_env_matches_scalar_envs(features, config):
    num_envs = 16
    rng = np.random.default_rng(1)
    vector = VectorizedTradingEnv(features, num_envs, config)
    starts = torch.as_tensor(rng.integers(0, vector.starts.total, num_envs))
    actions = rng.integers(0, 3, size=(config.episode_steps, num_envs))
    actions[:10] = BUY  # run into the upper clamp
    actions[10:25] = SELL  # and the lower one
    scalars = [TradingEnv(features, config) for _ in range(num_envs)]
    scalar_obs = np.stack([env.reset(options={"start": int(s)})[0] for env, s in zip(scalars, starts)])
    vector_obs = vector.reset(starts)
    np.testing.assert_allclose(vector_obs.numpy(), scalar_obs, rtol=1e-6)
    for t in range(config.episode_steps):
        vector_obs, vector_reward = vector.step(torch.as_tensor(actions[t]))
        results = [env.step(int(a)) for env, a in zip(scalars, actions[t])]
        np.testing.assert_allclose(vector_reward.numpy(), [r[1] for r in results], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(vector_obs.numpy(), np.stack([r[0] for r in results]), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(vector.level.numpy(), [r[4]["level"] for r in results])
    np.testing.assert_allclose(vector.equity.numpy(), [env.equity for env in scalars], rtol=1e-5)
    assert vector.done and all(r[3] for r in results)


def test_vectorized_random_starts_differ_and_fit_the_split(features):
    vector = VectorizedTradingEnv(features, 256, EnvConfig(episode_steps=100))
    vector.reset(generator=torch.Generator().manual_seed(0))
    assert len(set(vector.start.tolist())) > 200  # the seed's bug: every env started at the same bar
    assert int(vector.start.max()) + 100 <= len(features) - 1


def test_episodes_never_cross_segments(features):
    two = concatenate([features.rows(slice(0, 300)), features.rows(slice(300, 700))])
    vector = VectorizedTradingEnv(two, 2048, EnvConfig(episode_steps=100))
    vector.reset(generator=torch.Generator().manual_seed(0))
    starts = vector.start.numpy()
    in_first = starts < 300
    assert in_first.any() and (~in_first).any()
    assert (starts[in_first] + 100 <= 299).all() and (starts[~in_first] + 100 <= 699).all()
    scalar = TradingEnv(two, EnvConfig(episode_steps=100))
    for seed in range(50):
        start = scalar.reset(seed=seed)[1]["row"]
        assert start + 100 <= (299 if start < 300 else 699)


def test_reset_and_step_copy_nothing_from_the_host(features, monkeypatch):
    """The optimized trainer captures reset + every step in one CUDA graph: no host-to-device copies allowed."""
    two = concatenate([features.rows(slice(0, 300)), features.rows(slice(300, 700))])
    vector = VectorizedTradingEnv(two, 64, EnvConfig(episode_steps=50))

    def refuse(*args, **kwargs):
        raise AssertionError("a host-to-device copy inside the rollout")
    monkeypatch.setattr(torch, "as_tensor", refuse)
    monkeypatch.setattr(torch, "tensor", refuse)
    vector.reset()
    for _ in range(5):
        vector.advance(torch.zeros(64, dtype=torch.long))
