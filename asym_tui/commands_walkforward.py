"""`asym-tui walkforward`: walk-forward or combinatorial purged cross-validation over a file, folder or glob,
each fold trained from scratch, the chosen policies judged out of sample next to the baselines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from asym_tui.console import make_console, print_json, progress_display
from asym_tui.options import EXIT_SIGNAL, add_executor_options, add_run_options, overrides_from, stop_on_signals
from asym_tui.tables import overfitting_text, walkforward_aggregate_table, walkforward_table
from engine.config import trading_costs
from engine.walkforward import WalkForward, length_label, new_study_dir, plan_study, read_spec, run_walkforward, study_spec


def register(commands) -> None:
    parser = commands.add_parser("walkforward", help="walk-forward or purged cross-validation: train each fold from scratch, judge it out of sample")
    add_run_options(parser)
    add_executor_options(parser)
    parser.add_argument("--train", help="training window per fold (validation is its latest part), e.g. 30d (default: half the data)")
    parser.add_argument("--test", help="test window per fold, e.g. 7d (default: the rest in 4 windows)")
    parser.add_argument("--step", help="how far each fold moves (default: the test window)")
    parser.add_argument("--purge", type=int, metavar="BARS", help="bars between training data and each test window (default: macro window + warm-up)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per fold and candidate (default 1)")
    parser.add_argument("--trainers", default="optimized", help="trainers compared: optimized, original or original,optimized")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="run-config values compared (candidates), repeatable")
    parser.add_argument("--cpcv", metavar="N,K", help="combinatorial purged cross-validation: N groups by time, every choice of K as test")
    parser.add_argument("--resume", metavar="DIR", help="finish a walk-forward folder, skipping finished folds")
    parser.set_defaults(handler=cmd_walkforward)


def cmd_walkforward(args) -> int:
    if args.resume:
        spec = read_spec(args.resume)
    else:
        spec = study_spec(args.preset, overrides_from(args), args.train, args.test, args.step, args.purge, args.seeds, args.trainers,
                          args.grid, args.cpcv)
    base, folds, windows, grid = plan_study(spec)
    folder = Path(args.resume).resolve() if args.resume else new_study_dir(base.out_dir, args.name)
    console = make_console(stderr=args.json)
    console.print(header(spec, base, folds), highlight=False)
    console.print(f"→ {folder}", highlight=False, soft_wrap=True)
    with stop_on_signals() as (stop, received), progress_display(console, args.quiet, spec["trainers"]) as on_event:
        on_row = lambda row: console.print(f"  {row['trial']} {row['status']}: " + escape(row_text(row)), highlight=False, overflow="fold")
        study = run_walkforward(base, spec, folds, folder, grid, windows, stop=stop, on_event=on_event, on_row=on_row, ray=args.ray,
                                cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
    if args.json:
        print_json(study.to_json())
    else:
        print_study(console, study)
    return EXIT_SIGNAL.get(received[0], 130) if received else 0


def row_text(row: dict) -> str:
    """A finished fold × candidate × seed in a few words (or why it has no result)."""
    if "agent" not in row:
        return row["error"]
    return f"Sharpe {row['agent']:.2f} vs buy-and-hold {row['buy_and_hold']:.2f}" + (" (no edge: flat)" if row["no_edge"] else "")


def header(spec: dict, base, folds) -> str:
    first = folds[0]
    what = (f"CPCV {spec['cpcv']} ({len(folds)} splits)" if spec["cpcv"] else
            f"walk-forward, {len(folds)} folds (train {length_label(first.train[1] - first.train[0])}, "
            f"test {length_label(first.tests[0][1] - first.tests[0][0])})")
    return (f"[bold]{what}[/] on {base.data} · purge {spec['purge_bars']} bars · {spec['seeds']} seed(s) × {', '.join(spec['trainers'])} · "
            f"{base.duration_s:g} s per run · {trading_costs(base)}")


def print_study(console: Console, study: WalkForward) -> None:
    console.print(walkforward_table(study.rows, "Out of sample per fold (Sharpe; best constant in hindsight)", console.width))
    console.print(walkforward_aggregate_table(study.aggregate, console.width))
    console.print(overfitting_text(study.pbo), highlight=False, overflow="fold")
    if study.paths:
        for key, sharpes in study.paths.items():
            console.print(f"  CPCV paths, {key}: " + ", ".join(f"{value:.2f}" for value in sharpes), highlight=False)
    chart = fold_chart(study, min(console.width, 100))
    if chart:
        console.print(Text.from_ansi(chart))
    console.print(f"[dim]{study.folder / 'walkforward.csv'}[/]", highlight=False, soft_wrap=True)


def fold_chart(study: WalkForward, width: int) -> str:
    """Per-fold Sharpe of each candidate's chosen policies (mean over seeds) beside buy-and-hold."""
    import plotext as plt

    rows = [row for row in study.rows if "agent" in row]
    if not rows:
        return ""
    frame = pd.DataFrame(rows)
    folds = list(dict.fromkeys(frame["fold"]))
    plt.clear_figure()
    plt.plotsize(width, 15)
    plt.title("out-of-sample Sharpe per fold")
    for label, part in frame.groupby("candidate", sort=False):
        means = part.groupby("fold")["agent"].mean().reindex(folds)
        plt.plot(list(range(1, len(folds) + 1)), means.tolist(), label=label, marker="braille")
    plt.plot(list(range(1, len(folds) + 1)), frame.groupby("fold")["buy_and_hold"].mean().reindex(folds).tolist(), label="buy-and-hold",
             marker="braille")
    plt.hline(0.0)
    plt.xlabel("fold")
    return plt.build()
