"""Greedy backtests of the agent over a whole series, next to baselines a constant policy cannot hide behind.

Each backtest is one continuous episode that starts flat at the series' first bar, with the same fees
as training. The agent acts greedily (argmax of its logits). Baselines on the same bars:
- buy-and-hold, flat and random;
- the best constant position (long, short or flat, whichever has the best Sharpe in hindsight);
- the trailing-return rule: long when the mean log return over the macro window is positive, else
  short (flat where shorts are off) — a simple causal trend rule, the yardstick for "skill".

Model selection scores validation *and* its mirror image (every return negated): a constant position
that profits on one loses on the other, so only a policy that reads the market scores well on both.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from engine.data import load_candles
from engine.env import BUY, HOLD, SELL, EnvConfig, TradingEnv
from engine.features import Features, MarketSplits, Normalizer, concatenate, series_features
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
    """One episode per segment of the series, chained: flat across each cut, equity carried over."""
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


@torch.no_grad()
def agent_backtest(model: AsymmetricPolicyNetwork, split: Features, env_config: EnvConfig, bar_seconds: float) -> Backtest:
    """Greedy policy over the series. MacroNet and MicroNet don't see the position, so every row is
    embedded in one batched pass. Without the equity input the head's choice depends only on (bar,
    level), so it is computed for every bar and level at once and the walk is a table lookup; with it,
    the small head runs bar by bar (on the CPU, no device syncs)."""
    env = _whole_split_env(split, env_config)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    embedding = model.embed(torch.as_tensor(env.table, device=device)).float().cpu()
    head = copy.deepcopy(model.head).float().cpu().eval()
    model.train(was_training)
    if not env_config.observe_equity:
        levels = (-1, 0, 1)
        choices = torch.stack([head(torch.cat([embedding, torch.tensor([[level, 1.0]]).expand(len(embedding), 2)], dim=1)).argmax(1)
                               for level in levels], dim=1).numpy()
        return _run(env, lambda step, env: int(choices[env.row, env.level + 1]), bar_seconds)

    def greedy(step: int, env: TradingEnv) -> int:
        state = torch.tensor([[env.level, env.equity]], dtype=torch.float32)
        return int(head(torch.cat([embedding[env.row : env.row + 1], state], dim=1)).argmax())

    return _run(env, greedy, bar_seconds)


def constant_backtest(split: Features, env_config: EnvConfig, bar_seconds: float, level: int) -> Backtest:
    return _run(_whole_split_env(split, env_config), lambda step, env: toward(env.level, level), bar_seconds)


def baseline_backtests(split: Features, env_config: EnvConfig, bar_seconds: float, seed: int = 0) -> dict[str, Backtest]:
    rng = np.random.default_rng(seed)
    lowest = -1 if env_config.allow_short else 0
    trend = split.trend if split.trend is not None else np.zeros(len(split))
    rule = lambda step, env: toward(env.level, 1 if trend[env.row] > 0 else lowest)
    run = lambda policy: _run(_whole_split_env(split, env_config), policy, bar_seconds)
    backtests = {"buy_and_hold": constant_backtest(split, env_config, bar_seconds, 1),
                 "flat": run(lambda step, env: HOLD),
                 "random": run(lambda step, env: int(rng.integers(3)))}
    constants = {"long": backtests["buy_and_hold"], "flat": backtests["flat"]}
    if env_config.allow_short:
        constants["short"] = constant_backtest(split, env_config, bar_seconds, -1)
    best = max(constants, key=lambda name: constants[name].metrics["sharpe"])
    backtests["best_constant"] = dataclasses.replace(constants[best], metrics={**constants[best].metrics, "position": best})
    backtests["trailing_rule"] = run(rule)
    return backtests


def evaluate_split(model: AsymmetricPolicyNetwork, split: Features, env_config: EnvConfig, bar_seconds: float, seed: int = 0) -> dict:
    """Agent and baselines on one series: {'agent': Backtest, 'buy_and_hold': ..., 'trailing_rule': ...}."""
    return {"agent": agent_backtest(model, split, env_config, bar_seconds), **baseline_backtests(split, env_config, bar_seconds, seed)}


def validation_score(model: AsymmetricPolicyNetwork, splits: MarketSplits, env_config: EnvConfig,
                     validation: Backtest | None = None) -> float:
    """Mean greedy Sharpe on the validation split and its mirror image (what model selection uses)."""
    validation = validation or agent_backtest(model, splits.validation, env_config, splits.bar_seconds)
    if splits.validation_mirror is None:
        return validation.metrics["sharpe"]
    mirror = agent_backtest(model, splits.validation_mirror, env_config, splits.bar_seconds)
    return 0.5 * (validation.metrics["sharpe"] + mirror.metrics["sharpe"])


def rule_validation_score(splits: MarketSplits, env_config: EnvConfig) -> float:
    """The trailing-return rule's validation score, on the same terms as `validation_score`."""
    parts = [s for s in (splits.validation, splits.validation_mirror) if s is not None]
    return float(np.mean([baseline_backtests(s, env_config, splits.bar_seconds)["trailing_rule"].metrics["sharpe"] for s in parts]))


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
