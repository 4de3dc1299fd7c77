"""What a user would pick instead: Stable-Baselines3 PPO (default settings) on this project's own
`TradingEnv`, for a wall time, judged greedily on the same fresh series as scripts/learning_check.py and
reported the same way (per-seed ratios to the rule, median, worst, IQM and interval).

    pip install stable-baselines3
    python scripts/sb3_baseline.py --duration 60s --seeds 0-4 --fresh 11-18

Not part of the product or its tests: it produces the comparison table in docs/learning.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from learning_check import report, seed_list
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from engine.config import load_config, parse_duration
from engine.env import TradingEnv
from engine.evaluation import _run, _whole_split_env, baseline_backtests, source_features
from engine.runs import prepare_data


class WallClock(BaseCallback):
    """Stop learning after a wall time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.deadline = time.perf_counter() + seconds

    def _on_step(self) -> bool:
        return time.perf_counter() < self.deadline


def judge(model: PPO, splits, config, fresh: list[int], days: int) -> dict:
    series = []
    for seed in fresh:
        features, bar_seconds = source_features(f"synthetic:days={days},seed={seed}", splits.normalizer, config.macro_window, config.micro_window)
        env = _whole_split_env(features, config.env_config())
        greedy = lambda step, env: int(model.predict(env._observation(), deterministic=True)[0])
        baselines = baseline_backtests(features, config.env_config(), bar_seconds)
        series.append({"seed": seed, "agent": _run(env, greedy, bar_seconds).metrics,
                       **{name: baselines[name].metrics for name in ("trailing_rule", "buy_and_hold")}})
    mean = lambda policy, key: statistics.fmean(s[policy][key] for s in series)
    agent, rule = mean("agent", "sharpe"), mean("trailing_rule", "sharpe")
    return {"agent": agent, "rule": rule, "ratio": agent / rule, "buy_and_hold": mean("buy_and_hold", "sharpe"),
            "long": mean("agent", "long"), "short": mean("agent", "short"), "series": series}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="60s")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--fresh", default="11-18")
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config("quick")
    splits = prepare_data(config)
    fresh = seed_list(args.fresh)
    results = []
    for seed in seed_list(args.seeds):
        vec = make_vec_env(lambda: TradingEnv(splits.train, config.env_config()), n_envs=8, seed=seed)
        model = PPO("MlpPolicy", vec, seed=seed, device="cpu", verbose=0)
        started = time.perf_counter()
        model.learn(total_timesteps=10**9, callback=WallClock(parse_duration(args.duration)))
        seconds = time.perf_counter() - started
        verdict = {"seed": seed, "env_steps_per_s": model.num_timesteps / seconds, **judge(model, splits, config, fresh, args.days)}
        results.append(verdict)
        print(f"seed {seed}: agent {verdict['agent']:6.2f}  rule {verdict['rule']:6.2f}  ratio {verdict['ratio']:5.2f}  "
              f"long {verdict['long']:.0%} short {verdict['short']:.0%}  {verdict['env_steps_per_s']:,.0f} env-steps/s", flush=True)
    summary = report(results, f"SB3 PPO {args.duration}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"duration": args.duration, "fresh": fresh, "runs": results, "summary": summary}, handle, indent=2)


if __name__ == "__main__":
    main()
