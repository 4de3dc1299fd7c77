"""The learning check: train a preset for a wall time with several seeds, then judge each run's chosen
model greedily on fresh synthetic series next to the trailing-return rule and buy-and-hold, and report
the worst seed and the spread, not only the mean.

    python scripts/learning_check.py --preset quick --duration 60s --seeds 0-9 --fresh 5001-5008

Pick the fresh seeds yourself (any you like): nothing in the product is tuned to particular series.
Prints one line per run, then per-seed agent / rule ratios with their median, worst, IQM and a 95 %
stratified-bootstrap interval (series as tasks), and writes everything as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from engine.checkpoints import evaluate_checkpoint
from engine.config import load_config, parse_duration
from engine.runs import execute_run
from engine.stats import aggregate


def seed_list(text: str) -> list[int]:
    """'0-9' or '0,1,2' → seeds."""
    if "-" in text.strip("-"):
        first, last = (int(part) for part in text.split("-"))
        return list(range(first, last + 1))
    return [int(seed) for seed in text.split(",")]


def judge(run_dir, fresh: list[int], days: int) -> dict:
    series = []
    for seed in fresh:
        policies = evaluate_checkpoint(run_dir, f"synthetic:days={days},seed={seed}", "all")["policies"]
        series.append({"seed": seed, **{name: policies[name] for name in ("agent", "trailing_rule", "buy_and_hold")}})
    mean = lambda policy, key: statistics.fmean(s[policy][key] for s in series)
    agent, rule = mean("agent", "sharpe"), mean("trailing_rule", "sharpe")
    return {"agent": agent, "rule": rule, "ratio": agent / rule if rule > 0 else None, "buy_and_hold": mean("buy_and_hold", "sharpe"),
            "beats_buy_and_hold": sum(s["agent"]["sharpe"] > s["buy_and_hold"]["sharpe"] for s in series),
            "long": mean("agent", "long"), "short": mean("agent", "short"), "series": series}


def report(results: list[dict], label: str) -> dict:
    """Per-seed ratios (agent over the rule on the same series), their median, worst and interval."""
    ratios = np.array([[s["agent"]["sharpe"] / r["rule"] for s in r["series"]] for r in results])  # seeds x series, over the rule's mean
    verdict = aggregate(ratios)
    per_seed = [r["ratio"] for r in results]
    summary = {"label": label, "ratios": per_seed, "median": statistics.median(per_seed), "worst": min(per_seed),
               "iqm": verdict.iqm, "interval": list(verdict.interval), "long_min": min(r["long"] for r in results),
               "short_min": min(r["short"] for r in results), "beats_buy_and_hold_mean": statistics.fmean(r["agent"] > r["buy_and_hold"]
                                                                                                          for r in results)}
    print(f"{label}: agent / rule per seed {', '.join(f'{x:.2f}' for x in per_seed)}; median {summary['median']:.2f}, worst "
          f"{summary['worst']:.2f}, IQM {verdict.iqm:.2f} [{verdict.interval[0]:.2f}, {verdict.interval[1]:.2f}]; long >= "
          f"{summary['long_min']:.0%}, short >= {summary['short_min']:.0%}", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--duration", default="60s")
    parser.add_argument("--seeds", default="0-4", help="training seeds: 0-9 or 0,1,2")
    parser.add_argument("--fresh", default="11-18", help="seeds of the fresh synthetic series to judge on")
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
    fresh = seed_list(args.fresh)
    results = []
    for seed in seed_list(args.seeds):
        outcome = execute_run(load_config(args.preset, {**overrides, "seed": seed}))
        throughput = outcome.summary.throughput
        verdict = {"seed": seed, "run_dir": str(outcome.run_dir), "device": outcome.summary.device_label,
                   "env_steps_per_s": throughput.steps_per_s, "optimizer_steps": throughput.optimizer_steps,
                   "optimizer_steps_per_s": throughput.optimizer_steps_per_s, "elapsed_s": throughput.elapsed_s,
                   "no_edge": bool((outcome.summary.selected_model or {}).get("no_edge")), **judge(outcome.run_dir, fresh, args.days)}
        results.append(verdict)
        print(f"seed {seed}: agent {verdict['agent']:6.2f}  rule {verdict['rule']:6.2f}  ratio {verdict['ratio'] or 0:5.2f}  "
              f"beats B&H {verdict['beats_buy_and_hold']}/{len(fresh)}  long {verdict['long']:.0%} short {verdict['short']:.0%}  "
              f"{verdict['optimizer_steps']:,} updates ({verdict['optimizer_steps_per_s']:.1f}/s), "
              f"{verdict['env_steps_per_s']:,.0f} env-steps/s, {verdict['elapsed_s']:.0f} s on {verdict['device']}"
              + ("  [no edge: flat]" if verdict["no_edge"] else ""), flush=True)
    summary = report(results, f"{args.preset} {args.duration}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"preset": args.preset, "duration": args.duration, "fresh": fresh, "runs": results, "summary": summary}, handle, indent=2)


if __name__ == "__main__":
    main()
