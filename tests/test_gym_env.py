"""The Gymnasium front doors: registration, the vector env adapter, and the README's training loop."""

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from engine.env import BUY
from engine.gym_env import ENV_ID, TradingVectorEnv, load_split


def test_registered_scalar_env_passes_the_checker():
    env = gym.make(ENV_ID, source="synthetic:days=6,seed=2", split="validation", macro_window=64, micro_window=16, episode_steps=50)
    check_env(env.unwrapped, skip_render_check=True)
    observation, _ = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    bounds = env.observation_space
    assert bounds.high[-2] == 1 and bounds.low[-2] == -1 and np.isfinite(bounds.high[:-2]).all()


def test_vector_env_follows_the_vector_api_with_same_step_autoreset():
    features, config = load_split("synthetic:days=6,seed=2", "train", macro_window=64, micro_window=16, episode_steps=10)
    envs = TradingVectorEnv(features, 16, config)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.single_action_space == gym.spaces.Discrete(3) and envs.action_space.shape == (16,)
    observation, info = envs.reset(seed=3)
    assert isinstance(observation, torch.Tensor) and observation.shape == (16,) + envs.single_observation_space.shape
    assert envs.single_observation_space.contains(observation[0].numpy())
    ended = torch.zeros(16, dtype=torch.bool)
    for _ in range(10):
        observation, reward, terminated, truncated, info = envs.step(torch.full((16,), BUY))
        assert reward.shape == terminated.shape == truncated.shape == (16,)
        done = terminated | truncated
        ended |= done
        assert torch.equal(info["_final_obs"], done)
        # the finished episode's last observation holds its position; the new episode starts flat
        assert (info["final_obs"][done, -2] == 1).all() and (observation[done, -2] == 0).all()
        assert all(envs.single_observation_space.contains(row.numpy()) for row in observation)
    assert ended.all()  # 10-step episodes, staggered: each ended once
    envs.reset(seed=3)
    again = envs.reset(seed=3)[0]
    assert torch.equal(again, envs.reset(seed=3)[0])


def test_make_vec_uses_the_fast_env():
    envs = gym.make_vec(ENV_ID, num_envs=8, vectorization_mode="vector_entry_point", source="synthetic:days=6,seed=2",
                        macro_window=64, micro_window=16)
    assert isinstance(envs, TradingVectorEnv) and envs.num_envs == 8


def test_the_readme_training_loop_runs_and_learns_something():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"<!-- vector-env-loop -->\n```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace('"synthetic"', '"synthetic:days=8,seed=3"', 1).replace("num_envs=64)", "num_envs=64, macro_window=64, micro_window=16)", 1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["update"] == 49 and torch.isfinite(namespace["loss"])
    assert namespace["returns"].shape == (32, 64)
