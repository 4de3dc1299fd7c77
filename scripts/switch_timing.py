"""When does a trained agent change sides, and what is switching sooner worth? (docs/learning.md)

    python scripts/switch_timing.py runs/A [runs/B ...] --fresh 8101-8108

For each run's chosen policy, on fresh synthetic series: its greedy Sharpe, position changes and share of
bars flat; the trailing-return z-score at the bars where it turns long or short (z = the mean log return
over the macro window in standard errors: the rule's signal, measured in evidence); and how often the
*sampled* policy changes position when it decides as it did in training (once per `action_repeat` bars). Then, on the same series, the trailing rule
and rules that change sides only once |z| passes a threshold: what reacting at a given z earns.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from engine.evaluation import LEVELS, table_backtest, target_table
from engine.policy import load_policy
from engine.synthetic import generate_candles
from learning_check import seed_list

THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0)


def trend_z(features, window: int) -> np.ndarray:
    """The trailing mean log return over `window` bars in standard errors of that mean."""
    per_bar = np.std(np.diff(np.log(features.close)))
    return features.trend / per_bar * np.sqrt(window)


def switch_only_table(z: np.ndarray, threshold: float) -> np.ndarray:
    """Hold the current side until |z| passes the threshold the other way (starting flat)."""
    held = np.array(LEVELS)
    target = np.where(np.abs(z)[:, None] > threshold, np.sign(z)[:, None], held)
    return held + np.sign(target - held)


def sampled_changes(policy, features, every: int, rng: np.random.Generator) -> int:
    """Position changes of the stochastic policy walked once over the series, deciding every `every` bars."""
    logits = policy.logits_by_level(features)
    probabilities = np.exp(logits - logits.max(axis=2, keepdims=True))
    cumulative = (probabilities / probabilities.sum(axis=2, keepdims=True)).cumsum(axis=2)
    draws, level, changes = rng.random(len(features)), 0, 0
    for row in range(0, len(features) - 1, every):
        action = min(int((draws[row] > cumulative[row, level + 1]).sum()), 2)
        new = int(np.clip(level + (action == 1) - (action == 2), policy.settings.env.min_level, 1))
        changes, level = changes + (new != level), new
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders to inspect")
    parser.add_argument("--fresh", default="8101-8108", help="seeds of the fresh synthetic series, e.g. 8101-8108")
    parser.add_argument("--days", type=int, default=40)
    args = parser.parse_args()
    policies = [load_policy(run) for run in args.runs]
    settings = policies[0].settings
    series = [policies[0].features(generate_candles(days=args.days, seed=seed)) for seed in seed_list(args.fresh)]
    backtest = lambda features, table: table_backtest(features, settings.env, settings.bar_seconds, table).metrics
    for run, policy in zip(args.runs, policies):
        every = json.loads((Path(run) / "config.json").read_text())["config"].get("action_repeat", 1)  # runs before it: 1
        sharpe, changes, flat, sampled, z_long, z_short = [], [], [], [], [], []
        rng = np.random.default_rng(0)
        for features in series:
            levels = policy.levels(features)
            metrics = backtest(features, target_table(levels))
            sharpe.append(metrics["sharpe"])
            flat.append(metrics["flat"])
            turned = np.flatnonzero(np.diff(levels) != 0) + 1
            changes.append(len(turned))
            z = trend_z(features, settings.macro_window)
            z_long += z[turned[levels[turned] == 1]].tolist()
            z_short += z[turned[levels[turned] == -1]].tolist()
            sampled.append(sampled_changes(policy, features, every, rng))
        median = lambda values: f"{statistics.median(values):+.2f}" if values else "n/a"
        print(f"{run}: greedy Sharpe {statistics.fmean(sharpe):.2f}, {statistics.fmean(changes):.0f} position changes per series, "
              f"flat {statistics.fmean(flat):.0%}; turns long at median z {median(z_long)}, short at {median(z_short)}; "
              f"sampled as in training (deciding {'every bar' if every == 1 else f'every {every} bars'}): "
              f"{statistics.fmean(sampled):,.0f} changes per series")
    for threshold in THRESHOLDS:
        results = [backtest(features, switch_only_table(trend_z(features, settings.macro_window), threshold)) for features in series]
        label = "trailing rule (changes side at z = 0)" if threshold == 0 else f"changes side only once |z| > {threshold}"
        print(f"{label}: Sharpe {statistics.fmean(r['sharpe'] for r in results):.2f}, "
              f"{statistics.fmean(r['trades'] for r in results):.0f} trades per series")


if __name__ == "__main__":
    main()
