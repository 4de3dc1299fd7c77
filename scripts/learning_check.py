"""The learning check: train a preset for a wall time with several seeds, then judge each run's chosen
model greedily on fresh synthetic series next to the trailing-return rule and buy-and-hold.

    python scripts/learning_check.py --preset quick --duration 60s --seeds 0,1,2 --fresh 11,12,13,14

Pick the fresh seeds yourself (any you like): nothing in the product is tuned to particular series.
Prints one line per run and the means, and writes everything as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import statistics

from engine.config import load_config, parse_duration
from engine.checkpoints import evaluate_checkpoint
from engine.runs import execute_run


def judge(run_dir, fresh: list[int], days: int) -> dict:
    series = []
    for seed in fresh:
        report = evaluate_checkpoint(run_dir, f"synthetic:days={days},seed={seed}", "all")
        policies = report["policies"]
        series.append({"seed": seed, **{name: policies[name] for name in ("agent", "trailing_rule", "buy_and_hold")}})
    mean = lambda policy, key: statistics.fmean(s[policy][key] for s in series)
    agent, rule = mean("agent", "sharpe"), mean("trailing_rule", "sharpe")
    return {"agent": agent, "rule": rule, "ratio": agent / rule if rule > 0 else None, "buy_and_hold": mean("buy_and_hold", "sharpe"),
            "beats_buy_and_hold": sum(s["agent"]["sharpe"] > s["buy_and_hold"]["sharpe"] for s in series),
            "long": mean("agent", "long"), "short": mean("agent", "short"), "series": series}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--duration", default="60s")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--fresh", default="11,12,13,14", help="seeds of the fresh synthetic series to judge on")
    parser.add_argument("--days", type=int, default=40, help="length of each fresh series")
    parser.add_argument("--trainer", default=None, help="original or optimized (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/learning-check")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    overrides.update(duration_s=parse_duration(args.duration), out_dir=args.out, unseen_series=0)
    if args.trainer:
        overrides["trainer"] = args.trainer
    fresh = [int(seed) for seed in args.fresh.split(",")]
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        outcome = execute_run(load_config(args.preset, {**overrides, "seed": seed}))
        verdict = {"seed": seed, "run_dir": str(outcome.run_dir), "device": outcome.summary.to_json()["device_label"],
                   "env_steps_per_s": outcome.summary.to_json()["throughput"]["steps_per_s"],
                   "optimizer_steps": outcome.summary.to_json()["throughput"]["optimizer_steps"],
                   "optimizer_steps_per_s": outcome.summary.to_json()["throughput"]["optimizer_steps_per_s"], **judge(outcome.run_dir, fresh, args.days)}
        results.append(verdict)
        print(f"seed {seed}: agent {verdict['agent']:6.2f}  rule {verdict['rule']:6.2f}  ratio {verdict['ratio'] or 0:5.2f}  "
              f"beats B&H {verdict['beats_buy_and_hold']}/{len(fresh)}  long {verdict['long']:.0%} short {verdict['short']:.0%}  "
              f"{verdict['optimizer_steps']:,} updates ({verdict['optimizer_steps_per_s']:.1f}/s), "
              f"{verdict['env_steps_per_s']:,.0f} env-steps/s on {verdict['device']}", flush=True)
    agent, rule = statistics.fmean(r["agent"] for r in results), statistics.fmean(r["rule"] for r in results)
    print(f"mean: agent {agent:.2f}  rule {rule:.2f}  ratio {agent / rule:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"preset": args.preset, "duration": args.duration, "fresh": fresh, "runs": results,
                       "mean_agent": agent, "mean_rule": rule, "ratio": agent / rule}, handle, indent=2)


if __name__ == "__main__":
    main()
