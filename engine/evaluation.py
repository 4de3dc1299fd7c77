"""Greedy backtests of the agent over a whole split, next to buy-and-hold, flat and a random policy.

Each backtest is one continuous episode that starts flat at the split's first bar, with the same fees
as training. The agent acts greedily (argmax of its logits).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from engine.env import BUY, HOLD, EnvConfig, TradingEnv
from engine.features import Features
from engine.metrics import compute_metrics
from engine.model import AsymmetricPolicyNetwork

BASELINES = ("buy_and_hold", "flat", "random")


@dataclass
class Backtest:
    """Equity (as a multiple of the start) and exposure level per bar of one split."""

    equity: np.ndarray  # (bars + 1,)
    levels: np.ndarray  # (bars,) level held during each bar
    metrics: dict[str, float]


def _run(env: TradingEnv, choose, bar_seconds: float) -> Backtest:
    env.reset(options={"start": 0})
    equity, levels = [1.0], []
    for step in range(env.episode_length):
        _, _, terminated, _, info = env.step(choose(step, env))
        equity.append(info["equity"])
        levels.append(info["level"])
        if terminated:
            break
    equity_array, level_array = np.asarray(equity), np.asarray(levels)
    config = env.config
    return Backtest(equity_array, level_array, compute_metrics(equity_array, bar_seconds, level_array, config.fee_rate, config.position_size))


def _whole_split_env(split: Features, env_config: EnvConfig) -> TradingEnv:
    return TradingEnv(split, dataclasses.replace(env_config, episode_steps=len(split) - 1))


@torch.no_grad()
def agent_backtest(model: AsymmetricPolicyNetwork, split: Features, env_config: EnvConfig, bar_seconds: float) -> Backtest:
    """Greedy policy over the split. MacroNet and MicroNet don't see the position, so every row is
    embedded in one batched pass; only the small head runs bar by bar (on the CPU, no device syncs)."""
    env = _whole_split_env(split, env_config)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    embedding = model.embed(torch.as_tensor(env.table, device=device)).float().cpu()
    head = copy.deepcopy(model.head).float().cpu().eval()
    model.train(was_training)

    def greedy(step: int, env: TradingEnv) -> int:
        state = torch.tensor([[env.level, env.equity]], dtype=torch.float32)
        return int(head(torch.cat([embedding[env.row : env.row + 1], state], dim=1)).argmax())

    return _run(env, greedy, bar_seconds)


def baseline_backtests(split: Features, env_config: EnvConfig, bar_seconds: float, seed: int = 0) -> dict[str, Backtest]:
    rng = np.random.default_rng(seed)
    policies = {
        "buy_and_hold": lambda step, env: BUY if step == 0 else HOLD,
        "flat": lambda step, env: HOLD,
        "random": lambda step, env: int(rng.integers(3)),
    }
    return {name: _run(_whole_split_env(split, env_config), policy, bar_seconds) for name, policy in policies.items()}


def evaluate_split(model: AsymmetricPolicyNetwork, split: Features, env_config: EnvConfig, bar_seconds: float, seed: int = 0) -> dict:
    """Agent and baselines on one split: {'agent': Backtest, 'buy_and_hold': ..., 'flat': ..., 'random': ...}."""
    return {"agent": agent_backtest(model, split, env_config, bar_seconds), **baseline_backtests(split, env_config, bar_seconds, seed)}
