"""What every command line subcommand shares: the one-line usage error, the run options (preset, data,
duration, fees, ...) and how they become run-config overrides, the executor options (local or Ray), and
the signal handling that stops a run cleanly."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from contextlib import contextmanager

from rich.console import Console

from engine.config import FEE_LEVELS, parse_duration

EXIT_USAGE, EXIT_FAILED = 2, 1
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}  # SIGHUP: terminal closed, ssh dropped


class UsageError(Exception):
    """A mistake the user can fix (bad flag, file, preset); printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{self.prog}: {message}")


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="run through Ray Tune (local instance, or a cluster address)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs Ray gives each run (default 1)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs (or a fraction) Ray gives each run (default 0)")


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use comma-separated integers, e.g. 256,1024") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use positive integers")
    return values


def switch_list(text: str) -> list[bool]:
    words = {"on": True, "off": False, "true": True, "false": False}
    parts = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not parts or any(part not in words for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: use on, off or on,off")
    return [words[part] for part in parts]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="preset name or path to a .toml file")
    parser.add_argument("--data", help="file, folder, glob, ZIP, or synthetic[:days=N,seed=S]")
    parser.add_argument("--duration", help="training time, e.g. 30s, 2m, 1h")
    parser.add_argument("--episodes", type=int, help="episode budget")
    parser.add_argument("--total-steps", type=int, metavar="N", help="env-step budget: stop after N env-steps (as total_timesteps in SB3/CleanRL)")
    parser.add_argument("--num-envs", type=int, help="parallel episodes (optimized trainer)")
    parser.add_argument("--algorithm", choices=("ppo", "reinforce"), help="optimized trainer's algorithm (the original always runs REINFORCE)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, help="mixed precision")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the policy")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, help="capture the rollout as a CUDA graph")
    parser.add_argument("--device", help="auto, cuda, mps or cpu")
    parser.add_argument("--seed", type=int, help="seeds torch, numpy and the environments (default 0)")
    add_cost_options(parser)
    parser.add_argument("--out", help="folder for run folders (default: runs)")
    parser.add_argument("--name", help="run folder name")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any run-config field (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout (progress goes to stderr)")
    parser.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard event files to <run>/tensorboard")


def add_cost_options(parser: argparse.ArgumentParser) -> None:
    """What each trade costs and how big it is: on every command that trains or backtests."""
    parser.add_argument("--fees", choices=tuple(FEE_LEVELS), help="a venue's fee level: " + ", ".join(
        f"{name} {100 * c:.3g}%%+{100 * s:.3g}%%" for name, (c, s) in FEE_LEVELS.items()))
    parser.add_argument("--fee", type=float, metavar="RATE", help="commission per trade, a fraction of the notional (0.001 = 0.1%%)")
    parser.add_argument("--slippage", type=float, metavar="RATE", help="slippage per trade, a fraction of the notional")
    parser.add_argument("--position-size", type=float, metavar="F", help="fraction of equity per exposure level (at most 1)")
    parser.add_argument("--no-short", action="store_true", default=None, help="long or flat only")


def cost_overrides(args) -> dict:
    """The run-config fields the cost options set (an explicit --fee or --slippage wins over --fees)."""
    commission, slippage = FEE_LEVELS[args.fees] if args.fees else (None, None)
    costs = {"commission": args.fee if args.fee is not None else commission, "slippage": args.slippage if args.slippage is not None else slippage,
             "position_size": args.position_size, "allow_short": False if args.no_short else None}
    return {key: value for key, value in costs.items() if value is not None}


def overrides_from(args) -> dict:
    flags = {"data": args.data, "num_envs": args.num_envs, "use_amp": args.amp, "compile_model": args.compile,
             "cuda_graphs": args.cuda_graphs, "device": args.device, "seed": args.seed, "out_dir": args.out,
             "run_name": args.name, "max_episodes": args.episodes, "total_steps": args.total_steps, "trainer": getattr(args, "trainer", None),
             "algorithm": args.algorithm, "tensorboard": args.tensorboard}
    overrides = {**{key: value for key, value in flags.items() if value is not None}, **cost_overrides(args)}
    if args.duration is not None:
        overrides["duration_s"] = parse_duration(args.duration)
        if not overrides["duration_s"]:
            raise UsageError(f"--duration {args.duration}: give a positive time; for no time limit leave it out and set a budget "
                             "(--episodes, --total-steps or --set duration_s=0)")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}: use KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return overrides


@contextmanager
def stop_on_signals():
    """First Ctrl+C / SIGTERM: stop after the current update and write results. Second: exit now
    (every file is written atomically, so nothing is left half-written)."""
    stop = threading.Event()
    received: list[int] = []

    def handle(signum, frame):
        if received:
            os._exit(EXIT_SIGNAL.get(signum, 130))
        received.append(signum)
        stop.set()
        Console(stderr=True).print(f"\n[yellow]{signal.Signals(signum).name}: stopping after the current update and saving… "
                                   "(again to exit now)[/]")

    previous = {sig: signal.signal(sig, handle) for sig in EXIT_SIGNAL}
    try:
        yield stop, received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_status(outcomes, received: list[int]) -> int:
    if received:
        return EXIT_SIGNAL.get(received[0], 130)
    return EXIT_FAILED if any(o is not None and o.summary.status == "failed" for o in outcomes) else 0


def check_ray(address: str | None) -> None:
    if address:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--ray needs Ray Tune: pip install -e '.[ray]'") from None


