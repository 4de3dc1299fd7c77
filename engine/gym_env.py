"""Gymnasium front doors to the trading environments, for SB3, CleanRL-style and other RL code.

- `make_env(source, split)`: the scalar `TradingEnv` on a data source's normalized split; also
  registered as `gym.make("asym/Trading-v0", source=..., split=...)`.
- `TradingVectorEnv`: the fast `VectorizedTradingEnv` behind the `gymnasium.vector.VectorEnv` API —
  torch tensors on any device in and out, the 5-tuple `step`, same-step autoreset (a finished episode
  restarts within the step; its last observation is in `info["final_obs"]`), and
  `gym.make_vec("asym/Trading-v0", num_envs=N, vectorization_mode="vector_entry_point")`.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from engine.config import load_config
from engine.env import EnvConfig, TradingEnv, VectorizedTradingEnv, observation_space
from engine.features import Features

ENV_ID = "asym/Trading-v0"


def load_split(source: str = "synthetic", split: str = "train", preset: str | None = None, **overrides) -> tuple[Features, EnvConfig]:
    """A data source's normalized split (train statistics) and the market rules of a run config."""
    from engine.runs import prepare_data

    config = load_config(preset, {"data": source, **overrides})
    return prepare_data(config)[split], config.env_config()


def make_env(source: str = "synthetic", split: str = "train", preset: str | None = None, **overrides) -> TradingEnv:
    """One `TradingEnv` (numpy, one episode at a time) on `source`'s split."""
    features, env_config = load_split(source, split, preset, **overrides)
    return TradingEnv(features, env_config)


class TradingVectorEnv(gym.vector.VectorEnv):
    """`num_envs` episodes stepped together on a torch device, as a gymnasium vector env."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, features: Features, num_envs: int, config: EnvConfig = EnvConfig(), device: str | torch.device = "cpu"):
        self.env = VectorizedTradingEnv(features, num_envs, config, device)
        self.num_envs, self.device = num_envs, self.env.device
        self.single_observation_space = observation_space(features, config)
        self.single_action_space = gym.spaces.Discrete(3)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.generator = torch.Generator(device=self.device)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.generator.manual_seed(seed)
        self.env.reset(generator=self.generator)
        self.env.stagger(self.generator)
        return self.env.observation(), {}

    def step(self, actions):
        actions = torch.as_tensor(actions, device=self.device).long()
        reward, terminated, truncated, final_rows, final_state, final_equity = self.env.step_autoreset(actions, self.generator)
        final_obs = torch.cat([self.env.table.index_select(0, final_rows), final_state], dim=1)
        info = {"final_obs": final_obs, "final_equity": final_equity, "_final_obs": terminated | truncated}
        return self.env.observation(), reward, terminated, truncated, info


def make_vector_env(source: str = "synthetic", split: str = "train", num_envs: int = 64, device: str = "cpu",
                    preset: str | None = None, **overrides) -> TradingVectorEnv:
    features, env_config = load_split(source, split, preset, **overrides)
    return TradingVectorEnv(features, num_envs, env_config, device)


if ENV_ID not in gym.registry:  # importing this module registers the id (or use gym.make("engine.gym_env:asym/Trading-v0"))
    gym.register(ENV_ID, entry_point="engine.gym_env:make_env", vector_entry_point="engine.gym_env:make_vector_env")
