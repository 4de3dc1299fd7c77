"""What a user would pick instead: Stable-Baselines3 PPO (default settings) on this project's own
`TradingEnv`, for a wall time, judged greedily on the same fresh series as scripts/learning_check.py.

    pip install stable-baselines3
    python scripts/sb3_baseline.py --duration 60s --seeds 0,1,2 --fresh 11,12,13,14

Not part of the product or its tests: it produces the comparison table in docs/learning.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
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
    rows = []
    for seed in fresh:
        features, bar_seconds = source_features(f"synthetic:days={days},seed={seed}", splits.normalizer, config.macro_window, config.micro_window)
        env = _whole_split_env(features, config.env_config())
        greedy = lambda step, env: int(model.predict(env._observation(), deterministic=True)[0])
        agent = _run(env, greedy, bar_seconds).metrics
        baselines = baseline_backtests(features, config.env_config(), bar_seconds)
        rows.append((agent["sharpe"], baselines["trailing_rule"].metrics["sharpe"], baselines["buy_and_hold"].metrics["sharpe"],
                     agent["long"], agent["short"]))
    rows = np.asarray(rows)
    return {"agent": rows[:, 0].mean(), "rule": rows[:, 1].mean(), "beats": int((rows[:, 0] > rows[:, 2]).sum()),
            "long": rows[:, 3].mean(), "short": rows[:, 4].mean()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="60s")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fresh", default="11,12,13,14")
    parser.add_argument("--days", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config("quick")
    splits = prepare_data(config)
    fresh = [int(seed) for seed in args.fresh.split(",")]
    agents = []
    for seed in (int(s) for s in args.seeds.split(",")):
        vec = make_vec_env(lambda: TradingEnv(splits.train, config.env_config()), n_envs=8, seed=seed)
        model = PPO("MlpPolicy", vec, seed=seed, device="cpu", verbose=0)
        started = time.perf_counter()
        model.learn(total_timesteps=10**9, callback=WallClock(parse_duration(args.duration)))
        seconds = time.perf_counter() - started
        verdict = judge(model, splits, config, fresh, args.days)
        agents.append(verdict["agent"])
        print(f"seed {seed}: agent {verdict['agent']:6.2f}  rule {verdict['rule']:6.2f}  ratio {verdict['agent'] / verdict['rule']:5.2f}  "
              f"beats B&H {verdict['beats']}/{len(fresh)}  long {verdict['long']:.0%} short {verdict['short']:.0%}  "
              f"{model.num_timesteps / seconds:,.0f} env-steps/s", flush=True)
    print(f"mean agent {statistics.fmean(agents):.2f}")


if __name__ == "__main__":
    main()
