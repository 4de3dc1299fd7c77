"""Greedy backtests of the agent over a whole series, next to baselines a constant policy cannot hide behind.

Each backtest is one continuous episode that starts flat at the series' first bar, with the same fees
as training. The agent acts greedily (argmax of its logits). Baselines on the same bars:
- buy-and-hold, flat and random;
- the best constant position (long, short or flat, whichever has the best Sharpe in hindsight);
- the trailing-return rule: long when the mean log return over the macro window is positive, else
  short (flat where shorts are off) — a simple causal trend rule, the yardstick for "skill".

Every backtest walks a table of the policy's decision at each (bar, level) — the environment's rules
without stepping it (tested equal) — so long series cost milliseconds; model selection builds on these
(engine/selection.py).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from engine.data import load_candles
from engine.env import BUY, HOLD, RUIN_EQUITY, SELL, EnvConfig, TradingEnv, bar_returns, segment_lengths
from engine.features import Features, Normalizer, concatenate, series_features
from engine.metrics import compute_metrics
from engine.model import AsymmetricPolicyNetwork

BASELINES = ("buy_and_hold", "flat", "random", "best_constant", "trailing_rule")


@dataclass
class Backtest:
    """Equity (as a multiple of the start) and exposure level per bar of one series."""

    equity: np.ndarray  # (bars + 1,)
    levels: np.ndarray  # (bars,) level held during each bar
    metrics: dict[str, float]


def _run(env: TradingEnv, choose, bar_seconds: float) -> Backtest:
    """Any policy stepped through the environment, one segment after another: flat across each cut,
    equity carried over. For policies that read more than (bar, level): the equity input, SB3 agents."""
    equity, levels, terminated = [1.0], [], False
    for start in (0, *env.starts.segment_ends[:-1]):
        if start:
            equity.append(equity[-1])  # the cut itself: flat, nothing earned or paid
            levels.append(0)
        carried = equity[-1]
        env.reset(options={"start": int(start)})
        for step in range(env.episode_length):
            _, _, terminated, _, info = env.step(choose(step, env))
            equity.append(carried * info["equity"])
            levels.append(info["level"])
            if terminated:
                break
        if terminated:
            break
    equity_array, level_array = np.asarray(equity), np.asarray(levels)
    config = env.config
    return Backtest(equity_array, level_array, compute_metrics(equity_array, bar_seconds, level_array, config.fee_rate, config.position_size))


def _whole_split_env(split: Features, env_config: EnvConfig) -> TradingEnv:
    return TradingEnv(split, dataclasses.replace(env_config, episode_steps=len(split) - 1))


def toward(level: int, target: int) -> int:
    """The action that moves an exposure level one step toward a target level."""
    return BUY if target > level else SELL if target < level else HOLD


EMBED_BLOCK_ROWS = 16_384  # rows per forward pass when a backtest embeds a whole series
LEVELS = (-1, 0, 1)  # column k of a transition table is the level LEVELS[k]
ACTION_STEP = np.array([0, 1, -1])  # HOLD, BUY, SELL as a change of level


def table_backtest(split: Features, env_config: EnvConfig, bar_seconds: float, next_level: np.ndarray) -> Backtest:
    """A policy whose decision depends only on (bar, level), given as a table: next_level[row, k] is the
    level it moves to at `row` when holding LEVELS[k]. The same rules and figures as `_run` (tested
    equal), at the cost of one pass of plain integer lookups: validation over long series stays cheap.

    Step r is the decision at row r; a segment's last row is the cut into the next one (flat, free)."""
    config = env_config
    # One flat list of ints: a nested list would be 3 objects per row for the garbage collector to scan.
    table = np.clip(next_level, config.min_level, 1).astype(np.int64).ravel().tolist()
    ends = np.cumsum(segment_lengths(split))
    levels = np.zeros(len(split) - 1, dtype=np.int64)
    start = 0
    for end in ends:
        level, walked = 0, []
        for row in range(3 * start + 1, 3 * (end - 1), 3):  # row's entry for `level` is at 3 * row + level + 1
            level = table[row + level]
            walked.append(level)
        levels[start : end - 1] = walked
        start = end
    traded = np.abs(np.diff(levels, prepend=0)) * config.position_size  # each segment starts flat: its cut row holds 0
    growth = np.maximum(0.0, 1.0 + levels * config.position_size * bar_returns(split.close))
    factors = (1.0 - traded * config.fee_rate) * growth
    factors[ends[:-1] - 1] = 1.0
    return _compound(levels, factors, ends, bar_seconds, config)


def _compound(levels: np.ndarray, factors: np.ndarray, ends: np.ndarray, bar_seconds: float, config: EnvConfig) -> Backtest:
    """Equity from per-step growth factors, segment by segment (equity[r + 1] is after step r); the
    backtest ends at the step where an episode is ruined, as in `_run`."""
    equity = np.ones(len(levels) + 1)
    start = 0
    for end in ends:
        episode = np.cumprod(factors[start : end - 1])
        ruined = np.flatnonzero(episode <= RUIN_EQUITY)
        stop = start + (ruined[0] + 1 if len(ruined) else len(episode))
        equity[start + 1 : stop + 1] = equity[start] * episode[: stop - start]
        if len(ruined):
            equity, levels = equity[: stop + 1], levels[:stop]
            break
        if end < ends[-1]:
            equity[end] = equity[end - 1]  # the cut: flat, nothing earned or paid
        start = end
    return Backtest(equity, levels, compute_metrics(equity, bar_seconds, levels, config.fee_rate, config.position_size))


def target_table(targets: np.ndarray) -> np.ndarray:
    """A policy that moves one step per bar toward a target level (a baseline) as a transition table."""
    held = np.array(LEVELS)
    return held + np.sign(np.asarray(targets)[:, None] - held)


def action_table(actions: np.ndarray) -> np.ndarray:
    """A policy given as the action it takes at each (bar, level) as a transition table."""
    return np.array(LEVELS) + ACTION_STEP[np.asarray(actions)]


@torch.no_grad()
def greedy_actions(model: AsymmetricPolicyNetwork, split: Features) -> np.ndarray:
    """(rows, 3): the greedy action at every bar for each level, without the equity input. MacroNet and
    MicroNet don't see the position, so every row is embedded once in one batched pass."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    embedding = embed_rows(model, np.concatenate([split.macro, split.micro], axis=1), device)
    head = model.head.float()
    choices = torch.stack([head(torch.cat([embedding, torch.tensor([[level, 1.0]], device=device).expand(len(embedding), 2)], dim=1)).argmax(1)
                           for level in LEVELS], dim=1).cpu().numpy()
    model.train(was_training)
    return choices


def embed_rows(model: AsymmetricPolicyNetwork, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """MacroNet and MicroNet over every row, in float32, a block of rows at a time: a long series in one
    pass would push its activations out of the CPU caches (a third slower)."""
    table = torch.as_tensor(rows, device=device)
    return torch.cat([model.embed(block).float() for block in table.split(EMBED_BLOCK_ROWS)])


@torch.no_grad()
def agent_backtest(model: AsymmetricPolicyNetwork, split: Features, env_config: EnvConfig, bar_seconds: float) -> Backtest:
    """Greedy policy over the series. Without the equity input the head's choice depends only on (bar,
    level), so it is computed for every bar and level at once and the walk is a table lookup; with it,
    the small head runs bar by bar (on the CPU, no device syncs)."""
    if not env_config.observe_equity:
        return table_backtest(split, env_config, bar_seconds, action_table(greedy_actions(model, split)))
    env = _whole_split_env(split, env_config)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    embedding = embed_rows(model, env.table, device).cpu()
    head = copy.deepcopy(model.head).float().cpu().eval()
    model.train(was_training)

    def greedy(step: int, env: TradingEnv) -> int:
        state = torch.tensor([[env.level, env.equity]], dtype=torch.float32)
        return int(head(torch.cat([embedding[env.row : env.row + 1], state], dim=1)).argmax())

    return _run(env, greedy, bar_seconds)


def constant_backtest(split: Features, env_config: EnvConfig, bar_seconds: float, level: int) -> Backtest:
    return table_backtest(split, env_config, bar_seconds, target_table(np.full(len(split), level)))


def trailing_rule_targets(split: Features, env_config: EnvConfig) -> np.ndarray:
    """Long when the mean log return over the macro window is positive, else short (flat without shorts)."""
    trend = split.trend if split.trend is not None else np.zeros(len(split))
    return np.where(trend > 0, 1, env_config.min_level)


def baseline_backtests(split: Features, env_config: EnvConfig, bar_seconds: float, seed: int = 0) -> dict[str, Backtest]:
    run = lambda table: table_backtest(split, env_config, bar_seconds, table)
    random_actions = np.random.default_rng(seed).integers(0, 3, size=len(split))
    backtests = {"buy_and_hold": constant_backtest(split, env_config, bar_seconds, 1),
                 "flat": constant_backtest(split, env_config, bar_seconds, 0),
                 "random": run(action_table(np.repeat(random_actions[:, None], 3, axis=1)))}
    constants = {"long": backtests["buy_and_hold"], "flat": backtests["flat"]}
    if env_config.allow_short:
        constants["short"] = constant_backtest(split, env_config, bar_seconds, -1)
    best = max(constants, key=lambda name: constants[name].metrics["sharpe"])
    backtests["best_constant"] = dataclasses.replace(constants[best], metrics={**constants[best].metrics, "position": best})
    backtests["trailing_rule"] = run(target_table(trailing_rule_targets(split, env_config)))
    return backtests


def evaluate_split(model: AsymmetricPolicyNetwork, split: Features, env_config: EnvConfig, bar_seconds: float, seed: int = 0) -> dict:
    """Agent and baselines on one series: {'agent': Backtest, 'buy_and_hold': ..., 'trailing_rule': ...}."""
    return {"agent": agent_backtest(model, split, env_config, bar_seconds), **baseline_backtests(split, env_config, bar_seconds, seed)}


def unseen_sources(data: str, count: int) -> list[str]:
    """`count` fresh 40-day synthetic series that training never saw (seeds other than the training one),
    for a run trained on the synthetic market; none for real data, whose unseen part is its test split."""
    from engine.synthetic import SYNTHETIC_DEFAULTS, parse_synthetic_options

    if not data.startswith("synthetic"):
        return []
    trained = parse_synthetic_options(data).get("seed", SYNTHETIC_DEFAULTS["seed"])
    seeds = [seed for seed in range(100_001, 100_001 + count + 1) if seed != trained][:count]
    return [f"synthetic:days=40,seed={seed}" for seed in seeds]


def source_features(source: str, normalizer: Normalizer, macro_window: int, micro_window: int) -> tuple[Features, float]:
    """Any data source as one normalized series (with the training run's statistics), and its bar length."""
    candles = load_candles(source)
    built, _ = series_features(candles, macro_window, micro_window)
    return normalizer.apply(concatenate([features for _, features in built])), candles.attrs["timeframe"].total_seconds()


def unseen_report(model: AsymmetricPolicyNetwork, normalizer: Normalizer, sources: list[str], env_config: EnvConfig,
                  macro_window: int, micro_window: int) -> dict:
    """Greedy agent vs the rule, buy-and-hold and the best constant on whole series training never saw."""
    per_series = []
    for source in sources:
        features, bar_seconds = source_features(source, normalizer, macro_window, micro_window)
        results = evaluate_split(model, features, env_config, bar_seconds)
        per_series.append({"source": source, **{name: results[name].metrics for name in ("agent", "trailing_rule", "buy_and_hold", "best_constant")}})
    mean = lambda policy, key: float(np.mean([series[policy][key] for series in per_series]))
    agent_sharpe, rule_sharpe = mean("agent", "sharpe"), mean("trailing_rule", "sharpe")
    return {
        "series": per_series,
        "agent_sharpe": agent_sharpe, "trailing_rule_sharpe": rule_sharpe, "buy_and_hold_sharpe": mean("buy_and_hold", "sharpe"),
        "best_constant_sharpe": mean("best_constant", "sharpe"),
        "rule_ratio": agent_sharpe / rule_sharpe if rule_sharpe > 0 else None,
        "beats_buy_and_hold": sum(s["agent"]["sharpe"] > s["buy_and_hold"]["sharpe"] for s in per_series),
        "long": mean("agent", "long"), "short": mean("agent", "short"), "flat": mean("agent", "flat"),
    }
