"""The `asym-tui` command line: the app with no arguments, headless subcommands otherwise."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from rich.console import Console
from rich.table import Table

from engine.data import DataError

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake the user can fix (bad flag, file, preset); printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{self.prog}: {message}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = parser.parse_args([a for a in argv if a != "--debug"])
        if args.command is None:
            return run_app(args)
        return args.handler(args)
    except (UsageError, DataError) as exc:
        if debug:
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_USAGE


def build_parser() -> Parser:
    parser = Parser(prog="asym-tui", description="Asymmetric RL trading agents: train, compare and watch.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(dest="command", parser_class=Parser)

    data = commands.add_parser("data", help="inspect and validate a data source")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    inspect = data_commands.add_parser("inspect", help="rows, time range, timeframe, gaps, features, splits")
    inspect.add_argument("source", help="CSV/Parquet/ZIP file, folder, glob, or synthetic[:days=N,seed=S]")
    inspect.add_argument("--macro-window", type=int, default=492)
    inspect.add_argument("--micro-window", type=int, default=60)
    inspect.set_defaults(handler=cmd_data_inspect)
    return parser


def run_app(args) -> int:
    from engine.data import load_candles

    load_candles("synthetic")
    raise UsageError("the terminal app is not built yet; try `asym-tui data inspect synthetic`")


def cmd_data_inspect(args) -> int:
    from engine.data import load_candles, summarize
    from engine.features import feature_names, prepare_splits

    console = Console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        candles = load_candles(args.source)
    started = time.perf_counter()
    splits = prepare_splits(candles, args.macro_window, args.micro_window)
    featurize_seconds = time.perf_counter() - started
    summary = summarize(candles)
    table = Table(title=f"Data source: {summary.source}", show_header=False)
    rows = [
        ("rows", f"{summary.rows:,}"),
        ("time range (UTC)", f"{summary.start:%Y-%m-%d %H:%M} → {summary.end:%Y-%m-%d %H:%M}"),
        ("timeframe (inferred)", str(summary.timeframe)),
        ("gaps", f"{summary.gaps:,} ({summary.missing_bars:,} missing bars, not filled)"),
        ("duplicates dropped", f"{summary.duplicates_dropped:,}"),
        ("price range", f"{summary.price_min:,.2f} – {summary.price_max:,.2f}"),
        ("feature dimensions", f"macro {splits.train.macro.shape[1]} + micro {splits.train.micro.shape[1]} "
                               f"({len(feature_names())} per window: mean/std/last of 14 indicators)"),
        ("windows", f"macro {args.macro_window} bars, micro {args.micro_window} bars"),
        ("splits (rows)", " / ".join(f"{name} {len(splits[name]):,}" for name in ("train", "validation", "test"))),
        ("featurization", f"{featurize_seconds:.2f} s ({len(candles) / featurize_seconds:,.0f} bars/s)"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for warning in caught:
        console.print(f"[yellow]warning:[/] {warning.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
