"""Trading environments: `TradingEnv` (gymnasium, numpy, one episode) and `VectorizedTradingEnv` (torch, N episodes).

Both follow the same rules (SPEC §4), checked against each other in tests/test_env.py:
- actions 0 HOLD, 1 BUY, 2 SELL move the exposure level by one step in {-1, 0, +1} (or {0, 1} without shorts);
- the agent decides at the close of bar t; the trade fills at close_t and pays commission + slippage on the
  traded notional (|level change| x position_size x equity);
- the step's growth is 1 + level x position_size x (close_{t+1} / close_t - 1), floored at 0, so equity never
  goes negative; an episode whose equity falls to (almost) nothing ends there ("ruin");
- reward = log(equity_{t+1} / equity_t) x reward_scale, fees included ("log"), or the seed's
  position PnL / initial equity x 100 - 0.01 per trade ("seed");
- the observation's last entry is equity / episode start equity only when `observe_equity` is on; by
  default it is the constant 1.0: in a whole-split backtest that ratio leaves its training range, and
  an agent that reads it learns to react to its own past luck rather than to the market.

`VectorizedTradingEnv.step_autoreset` is the persistent mode PPO uses: episodes that end (ruin =
terminated, `episode_steps` reached = truncated) start again at a fresh random bar in the same call.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from engine.features import Features

HOLD, BUY, SELL = 0, 1, 2
RUIN_EQUITY = 1e-6  # fraction of the episode's start equity below which the episode is over
SEED_TRADE_PENALTY = 0.01


@dataclass(frozen=True)
class EnvConfig:
    """Market rules shared by both environments."""

    episode_steps: int = 500  # steps per episode (fewer when the split ends first)
    position_size: float = 1.0  # fraction of equity per exposure level (1.0 = no leverage)
    allow_short: bool = True  # False limits the exposure level to {0, 1}
    commission: float = 0.001  # fraction of traded notional
    slippage: float = 0.0005  # fraction of traded notional
    reward: str = "log"  # "log" (log equity growth, fees included) or "seed" (the seed's PnL reward)
    reward_scale: float = 100.0  # multiplier of the log reward
    observe_equity: bool = False  # put equity / start equity in the observation (else the constant 1.0)

    @property
    def min_level(self) -> int:
        return -1 if self.allow_short else 0

    @property
    def fee_rate(self) -> float:
        return self.commission + self.slippage


class EpisodeStarts:
    """Valid start rows when the rows hold several independent series (segments) back to back.

    An episode of `episode_length` steps must stay inside one segment; starts are uniform over all
    valid starts. A plain split is one segment."""

    def __init__(self, segment_lengths: tuple[int, ...], episode_length: int):
        lengths = np.asarray(segment_lengths)
        # valid starts per segment: offset .. offset + length - 1 - episode_length (none in a segment too short)
        counts = np.maximum(lengths - episode_length, 0)
        self.total = int(counts.sum())
        self.ends = np.cumsum(counts)  # cumulative valid-start counts
        self.shift = np.concatenate([[0], np.cumsum(lengths)[:-1]]) - np.concatenate([[0], self.ends[:-1]])
        self.segment_ends = np.cumsum(lengths)  # first row after each segment

    def rows(self, draws):
        """Map uniform draws in [0, total) to start rows."""
        return draws + self.shift[np.searchsorted(self.ends, draws, side="right")]

    def segment_end(self, row: int) -> int:
        return int(self.segment_ends[np.searchsorted(self.segment_ends, row, side="right")])


def segment_lengths(features: Features) -> tuple[int, ...]:
    return features.segment_lengths or (len(features),)


def observation_size(features: Features) -> int:
    return features.macro.shape[1] + features.micro.shape[1] + 2


FEATURE_BOUND = 10.0  # normalized features are clipped to +/- this (engine.features.Normalizer)


def observation_space(features: Features, config: EnvConfig) -> gym.spaces.Box:
    """Tight bounds: features within the normalizer's clip (or the data's own range if wider), the
    exposure level within its clamps, the equity entry >= 0 (the constant 1 when not observed)."""
    columns = features.macro.shape[1] + features.micro.shape[1]
    observed = np.concatenate([features.macro, features.micro], axis=1) if len(features) else np.zeros((1, columns))
    low = min(-FEATURE_BOUND, float(observed.min()))
    high = max(FEATURE_BOUND, float(observed.max()))
    lows = np.concatenate([np.full(columns, low), [config.min_level, 0.0 if config.observe_equity else 1.0]])
    highs = np.concatenate([np.full(columns, high), [1.0, np.inf if config.observe_equity else 1.0]])
    return gym.spaces.Box(lows.astype(np.float32), highs.astype(np.float32), dtype=np.float32)


def bar_returns(close: np.ndarray) -> np.ndarray:
    """Simple return from each close to the next (float64)."""
    return close[1:] / close[:-1] - 1.0


class TradingEnv(gym.Env):
    """One episode at a time; the observation is [macro, micro, exposure level, equity / start equity]."""

    metadata = {"render_modes": []}

    def __init__(self, features: Features, config: EnvConfig = EnvConfig()):
        if len(features) < 2:
            raise ValueError("a split needs at least 2 rows to trade")
        self.config = config
        self.table = np.concatenate([features.macro, features.micro], axis=1).astype(np.float32)
        self.returns = bar_returns(features.close)
        self.observation_space = observation_space(features, config)
        self.action_space = gym.spaces.Discrete(3)
        lengths = segment_lengths(features)
        self.starts = EpisodeStarts(lengths, min(config.episode_steps, max(lengths) - 1))
        self.row = self.start = self.steps = 0
        self.level, self.equity = 0, 1.0

    @property
    def episode_length(self) -> int:
        return min(self.config.episode_steps, self.starts.segment_end(self.start) - 1 - self.start)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        start = (options or {}).get("start")
        self.start = int(self.starts.rows(self.np_random.integers(0, self.starts.total))) if start is None else int(start)
        self.row, self.steps, self.level, self.equity = self.start, 0, 0, 1.0
        return self._observation(), self._info()

    def step(self, action):
        config = self.config
        new_level = min(1, max(config.min_level, self.level + (action == BUY) - (action == SELL)))
        traded = abs(new_level - self.level) * config.position_size
        fee_factor = 1.0 - traded * config.fee_rate
        growth = max(0.0, 1.0 + new_level * config.position_size * float(self.returns[self.row]))
        if config.reward == "seed":
            pnl = self.equity * fee_factor * (growth - 1.0)
            reward = pnl * 100.0 - SEED_TRADE_PENALTY * (traded > 0)
        else:
            reward = (np.log(fee_factor) + np.log(max(growth, 1e-12))) * config.reward_scale
        self.equity *= fee_factor * growth
        self.level = new_level
        self.row += 1
        self.steps += 1
        terminated = self.equity <= RUIN_EQUITY
        truncated = not terminated and self.steps >= self.episode_length
        return self._observation(), float(reward), bool(terminated), bool(truncated), self._info()

    def _observation(self) -> np.ndarray:
        state = np.array([self.level, self.equity if self.config.observe_equity else 1.0], dtype=np.float32)
        return np.concatenate([self.table[self.row], state])

    def _info(self) -> dict:
        return {"equity": self.equity, "level": self.level, "row": self.row}


class VectorizedTradingEnv:
    """N episodes stepped together as tensors on one device; no host synchronisation per step.

    All N episodes have the same length (starts are drawn so every episode fits in the split), so
    the rollout is a fixed-shape loop — friendly to torch.compile and CUDA graphs.
    """

    def __init__(self, features: Features, num_envs: int, config: EnvConfig = EnvConfig(), device: str | torch.device = "cpu"):
        if len(features) < 2:
            raise ValueError("a split needs at least 2 rows to trade")
        self.config, self.num_envs, self.device = config, num_envs, torch.device(device)
        table = np.concatenate([features.macro, features.micro], axis=1)
        self.table = torch.as_tensor(table, dtype=torch.float32, device=self.device)
        self.returns = torch.as_tensor(bar_returns(features.close), dtype=torch.float32, device=self.device)
        lengths = segment_lengths(features)
        self.episode_length = min(config.episode_steps, max(lengths) - 1)
        self.starts = EpisodeStarts(lengths, self.episode_length)
        # On the device once: reset() must not copy from the host (it runs inside a CUDA graph capture).
        self.start_ends = torch.as_tensor(self.starts.ends, device=self.device)
        self.start_shift = torch.as_tensor(self.starts.shift, device=self.device)
        self.start = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.level = torch.zeros(num_envs, device=self.device)
        self.equity = torch.ones(num_envs, device=self.device)
        self.alive = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)  # steps taken in each episode
        self.length = torch.full((num_envs,), self.episode_length, dtype=torch.long, device=self.device)  # its length
        self.steps = 0  # steps since the last reset() (the fixed-length, all-episodes-together mode)

    def random_starts(self, generator: torch.Generator | None = None) -> torch.Tensor:
        draws = torch.randint(0, self.starts.total, (self.num_envs,), device=self.device, generator=generator)
        return draws + self.start_shift[torch.bucketize(draws, self.start_ends, right=True)]

    def reset(self, starts: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        self.start.copy_(self.random_starts(generator) if starts is None else starts)
        self.level.zero_()
        self.equity.fill_(1.0)
        self.alive.fill_(True)
        self.t.zero_()
        self.length.fill_(self.episode_length)
        self.steps = 0
        return self.observation()

    def stagger(self, generator: torch.Generator | None = None) -> None:
        """Move each episode a random number of steps into itself, so persistent episodes end at
        different times instead of all together."""
        offset = torch.randint(0, self.episode_length, (self.num_envs,), device=self.device, generator=generator)
        self.start.add_(offset)
        self.t.zero_()
        self.length.copy_(self.episode_length - offset)

    def state(self) -> torch.Tensor:
        """(N, 2): exposure level and the equity entry of the observation."""
        equity = self.equity if self.config.observe_equity else torch.ones_like(self.equity)
        return torch.stack([self.level, equity], dim=1)

    def observation(self) -> torch.Tensor:
        return torch.cat([self.table.index_select(0, self.rows()), self.state()], dim=1)

    def rows(self) -> torch.Tensor:
        """The bar (row of the split) each episode is at now."""
        return self.start + self.t

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply actions (N,) and return (next observation, reward); all episodes end together."""
        reward = self.advance(actions)
        return self.observation(), reward

    def advance(self, actions: torch.Tensor) -> torch.Tensor:
        """Apply actions (N,) and return the reward, without building the next observation."""
        config = self.config
        delta = (actions == BUY).float() - (actions == SELL).float()
        new_level = (self.level + delta).clamp(config.min_level, 1.0)
        traded = (new_level - self.level).abs() * config.position_size
        fee_factor = 1.0 - traded * config.fee_rate
        bar_return = self.returns.index_select(0, self.rows())
        growth = (1.0 + new_level * config.position_size * bar_return).clamp(min=0.0)
        alive = self.alive.float()
        if config.reward == "seed":
            pnl = self.equity * fee_factor * (growth - 1.0)
            reward = (pnl * 100.0 - SEED_TRADE_PENALTY * (traded > 0).float()) * alive
        else:
            reward = (fee_factor.log() + growth.clamp(min=1e-12).log()) * (config.reward_scale * alive)
        # A ruined episode keeps its (tiny) equity and level; it earns nothing more. State is updated in
        # place so that a captured CUDA graph keeps reading and writing the same tensors.
        self.equity.copy_(torch.where(self.alive, self.equity * fee_factor * growth, self.equity))
        self.level.copy_(torch.where(self.alive, new_level, self.level))
        self.alive.copy_(self.alive & (self.equity > RUIN_EQUITY))
        self.t += 1
        self.steps += 1
        return reward

    def step_autoreset(self, actions: torch.Tensor, generator: torch.Generator | None = None, repeat: int = 1):
        """Apply actions; episodes that end start again at a fresh random bar.

        With `repeat` > 1 an action decides `repeat` bars: it trades at the first and HOLDs for the
        others; the reward is their sum. An episode that ends within them ends there (what follows is
        its successor holding flat, which earns and pays nothing).

        Returns (reward, terminated, truncated, final_rows, final_state, final_equity): the last three
        describe each episode *before* any reset (its next observation had it gone on, and its equity),
        so a learner can bootstrap the value of a truncated episode. No host synchronisation."""
        reward, terminated, truncated, final_rows, final_state, final_equity = self._step_autoreset(actions, generator)
        hold = torch.full_like(actions, HOLD)
        for _ in range(repeat - 1):
            more, *ended = self._step_autoreset(hold, generator)
            reward = reward + more
            # an episode that already ended keeps what it ended with; the others take this bar's outcome
            done = terminated | truncated
            terminated, truncated = terminated | ended[0] & ~done, truncated | ended[1] & ~done
            final_rows = torch.where(done, final_rows, ended[2])
            final_state = torch.where(done.unsqueeze(1), final_state, ended[3])
            final_equity = torch.where(done, final_equity, ended[4])
        return reward, terminated, truncated, final_rows, final_state, final_equity

    def _step_autoreset(self, actions: torch.Tensor, generator: torch.Generator | None = None):
        reward = self.advance(actions)
        terminated = ~self.alive
        truncated = (self.t >= self.length) & self.alive
        final_rows, final_state, final_equity = self.rows().clamp(max=self.table.shape[0] - 1), self.state(), self.equity.clone()
        done = terminated | truncated
        self.start.copy_(torch.where(done, self.random_starts(generator), self.start))
        self.t.masked_fill_(done, 0)
        self.length.masked_fill_(done, self.episode_length)
        self.level.masked_fill_(done, 0.0)
        self.equity.masked_fill_(done, 1.0)
        self.alive.copy_(self.alive | done)
        return reward, terminated, truncated, final_rows, final_state, final_equity

    @property
    def done(self) -> bool:
        return self.steps >= self.episode_length
