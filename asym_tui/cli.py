"""The `asym-tui` command line: the app with no arguments, headless subcommands otherwise."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from asym_tui.console import headline, make_console, print_comparison, print_json, print_run_summary, progress_display
from asym_tui import commands_fetch, commands_policy, commands_walkforward
from asym_tui.info import cmd_data_inspect, cmd_doctor, cmd_presets_list, cmd_presets_show
from asym_tui.options import (EXIT_FAILED, EXIT_SIGNAL, EXIT_USAGE, Parser, UsageError, add_cost_options, add_executor_options,
                              add_run_options, check_ray, cost_overrides, exit_status, int_list, overrides_from, stop_on_signals,
                              switch_list)
from asym_tui.tables import bench_table, metrics_table, number, rich_table, sweep_table
from engine.config import load_config
from engine.errors import UserError
from engine.runs import VERSION

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args([a for a in argv if a != "--debug"])
        if args.command is None:
            return run_app(args)
        return args.handler(args)
    except (UsageError, UserError) as exc:
        if debug:
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except BrokenPipeError:  # `asym-tui ... | head` closed the pipe: nothing more to say, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> Parser:
    parser = Parser(prog="asym-tui", description="Asymmetric RL trading agents: train, compare and watch.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"asym-tui {VERSION}")
    parser.add_argument("--data", help="data source for the app (default: synthetic)")
    parser.add_argument("--preset", help="preset selected when the app opens")
    parser.add_argument("--out", help="runs folder for the app (default: runs)")
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    train = commands.add_parser("train", help="train one agent headless, with a progress bar")
    add_run_options(train)
    train.add_argument("--trainer", choices=("original", "optimized"), help="one episode at a time (original) or vectorized (optimized, default)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its folder")
    train.set_defaults(handler=cmd_train)

    compare = commands.add_parser("compare", help="original vs optimized on the same data, seed and duration; or two run folders")
    compare.add_argument("runs", nargs="*", metavar="RUN_DIR", help="two existing run folders to compare instead of training")
    add_run_options(compare)
    compare.add_argument("--seeds", type=int, default=1, help="seeds per trainer, each with the same wall time (default 1)")
    add_executor_options(compare)
    compare.set_defaults(handler=cmd_compare)

    evaluate = commands.add_parser("eval", help="backtest a checkpoint on any data next to buy-and-hold, the best constant and the trend rule")
    evaluate.add_argument("checkpoint", help="checkpoint.pt or its run folder")
    evaluate.add_argument("--data", help="data source, e.g. synthetic:seed=42 (default: the run's)")
    evaluate.add_argument("--split", choices=("train", "validation", "test", "all"), help="part of the series (default: test of the run's data, all of other data)")
    evaluate.add_argument("--last", action="store_true", help="the last weights, not the ones chosen on validation")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.add_argument("--out", metavar="DIR", help="also write the agent's positions and trades there (CSV and Parquet)")
    add_cost_options(evaluate)
    evaluate.set_defaults(handler=cmd_eval)
    commands_policy.register(commands)

    presets = commands.add_parser("presets", help="list presets or show one")
    preset_commands = presets.add_subparsers(dest="presets_command", required=True, parser_class=Parser)
    preset_commands.add_parser("list", help="every preset with its description").set_defaults(handler=cmd_presets_list)
    show = preset_commands.add_parser("show", help="a preset's resolved config, model layers and parameters")
    show.add_argument("name")
    show.set_defaults(handler=cmd_presets_show)

    sweep = commands.add_parser("sweep", help="a grid of runs, locally or on a Ray cluster, ranked by validation score")
    add_run_options(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a grid axis (repeatable)")
    sweep.add_argument("--seeds", type=int, default=1, help="seeds per grid point")
    add_executor_options(sweep)
    sweep.add_argument("--resume", metavar="SWEEP_DIR", help="rerun a sweep folder, skipping finished trials")
    sweep.set_defaults(handler=cmd_sweep)

    commands_walkforward.register(commands)

    bench = commands.add_parser("bench", help="throughput of original vs optimized configurations, side by side")
    bench.add_argument("--quick", action="store_true", help="a small matrix (under 30 s on a CPU)")
    bench.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    bench.add_argument("--num-envs", type=int_list, help="comma-separated, e.g. 256,1024")
    bench.add_argument("--amp", type=switch_list, help="on, off or on,off")
    bench.add_argument("--compile", type=switch_list, help="on, off or on,off")
    bench.add_argument("--cuda-graphs", type=switch_list, help="on, off or on,off (CUDA only)")
    bench.add_argument("--episode-steps", type=int, default=500)
    bench.add_argument("--algorithm", choices=("ppo", "reinforce"), default="ppo", help="the optimized configurations' algorithm")
    bench.add_argument("--iterations", type=int, default=2, help="measured iterations per configuration")
    bench.add_argument("--warmup", type=int, default=2, help="warm-up iterations, timed separately (2 cover both MacroNet modes)")
    bench.add_argument("--update-minibatch", type=int, help="samples per update chunk")
    bench.add_argument("--data", default="synthetic")
    bench.add_argument("--days", type=int_list, help="a data-size axis: the synthetic market at each length, e.g. 30,365,1825 "
                                                      "(env-steps/s, updates/s and peak memory against data length)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON on stdout (tables and progress go to stderr)")
    bench.add_argument("--out", metavar="PATH", help="also write the results as JSON to this file")
    bench.set_defaults(handler=cmd_bench)

    doctor = commands.add_parser("doctor", help="what this machine can do: device, GPU, AMP, torch.compile, preset")
    doctor.add_argument("--no-probes", action="store_true", help="skip the AMP and compile probes")
    doctor.add_argument("--json", action="store_true", help="print the facts as JSON")
    doctor.set_defaults(handler=cmd_doctor)

    data = commands.add_parser("data", help="inspect and validate a data source, or fetch Binance klines")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    inspect = data_commands.add_parser("inspect", help="rows, time range, timeframe, gaps, features, splits")
    inspect.add_argument("source", help="CSV/Parquet/ZIP file, folder, glob, or synthetic[:days=N,seed=S]")
    inspect.add_argument("--macro-window", type=int, default=492)
    inspect.add_argument("--micro-window", type=int, default=60)
    inspect.add_argument("--json", action="store_true", help="print the facts as JSON")
    inspect.set_defaults(handler=cmd_data_inspect)
    commands_fetch.register(data_commands)
    return parser


def cmd_train(args) -> int:
    from engine.runs import execute_run, resume_config

    overrides = overrides_from(args)
    if args.resume and args.preset:
        raise UsageError("--preset does not apply with --resume: a resumed run keeps its own config (change fields with --set)")
    config = resume_config(args.resume, overrides) if args.resume else load_config(args.preset, overrides)
    console = make_console(stderr=args.json)
    with stop_on_signals() as (stop, received), progress_display(console, args.quiet, [config.trainer], json_lines=args.json) as on_event:
        outcome = execute_run(config, on_event=on_event, stop=stop, resume_dir=args.resume)
    if args.json:
        print_json(headline(outcome))
    else:
        print_run_summary(console, outcome)
    return exit_status([outcome], received)


def cmd_compare(args) -> int:
    from engine.compare import comparison_of, run_comparison
    from engine.runs import read_summary

    console = make_console(stderr=args.json)
    show = (lambda comparison: print_json(comparison.to_json())) if args.json else (lambda comparison: print_comparison(console, comparison))
    if args.runs:
        if len(args.runs) != 2:
            raise UsageError("compare takes exactly two run folders, or none to train both")
        show(comparison_of([read_summary(args.runs[0])], [read_summary(args.runs[1])]))
        return 0
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    config = load_config(args.preset, overrides_from(args))
    check_ray(args.ray)
    with stop_on_signals() as (stop, received), progress_display(make_console(stderr=True), args.quiet, ["original", "optimized"]) as on_event:
        comparison = run_comparison(config, args.seeds, on_event=on_event, stop=stop, ray=args.ray,
                                    cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
    failed = any(s.status == "failed" for side in (comparison.left, comparison.right) for s in side.summaries)
    if comparison.left.summaries and comparison.right.summaries:
        show(comparison)
    return EXIT_SIGNAL.get(received[0], 130) if received else EXIT_FAILED if failed else 0


def cmd_eval(args) -> int:
    import json

    from engine.checkpoints import evaluate_checkpoint

    split = args.split or ("all" if args.data else "test")
    report = evaluate_checkpoint(args.checkpoint, args.data, split, args.last, with_backtest=args.out is not None, overrides=cost_overrides(args))
    commands_policy.write_positions(report, args.out)
    if args.json:
        print(json.dumps(report, indent=2, default=float))
        return 0
    console = make_console()
    console.print(f"[bold]{report['data']}[/] — {split} split, {report['bars']:,} bars, "
                  f"{report['periods_per_year']:,.0f} periods/year, {report['fee_model']}; {report['weights']}", highlight=False)
    console.print(metrics_table(report["policies"], "Backtest (greedy agent vs baselines)", console.width))
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    return 0


def cmd_sweep(args) -> int:
    from engine.sweep import best_trial_dsr, execute_trials, make_trials, new_sweep_dir, parse_grid, ranked, read_sweep_record, write_tables

    check_ray(args.ray)
    if args.resume:
        saved = read_sweep_record(args.resume)
        args.preset, args.grid, args.seeds = saved["preset"], saved["grid_args"], saved["seeds"]
    overrides = {**(saved["overrides"] if args.resume else {}), **overrides_from(args)}
    if "data" in overrides and Path(overrides["data"]).exists():
        overrides["data"] = str(Path(overrides["data"]).resolve())  # trials may run in other folders (Ray)
    base = load_config(args.preset, overrides)
    if not args.grid:
        raise UsageError("sweep needs at least one --grid KEY=V1,V2")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    grid = parse_grid(args.grid, base)
    trials = make_trials(grid, args.seeds, base.seed)
    sweep_dir = Path(args.resume).resolve() if args.resume else new_sweep_dir(base.out_dir, args.name or "")
    spec = {"preset": args.preset, "grid_args": args.grid, "grid": grid, "seeds": args.seeds,
            "executor": f"ray ({args.ray})" if args.ray else "local", "overrides": {k: v for k, v in overrides.items() if k != "run_name"}}
    console = make_console(stderr=args.json)
    console.print(f"[bold]Sweep[/] of {len(trials)} trials ({' × '.join(f'{k} {len(v)}' for k, v in grid.items())} × {args.seeds} seed(s)) "
                  f"→ {sweep_dir} [{spec['executor']}]")
    on_row = lambda row: console.print(f"  {row['trial']} {row['status']}" + (f" — {row['error']}" if row["error"] else
                                       f": validation Sharpe {row['val_sharpe']:.2f}, {row['episodes_per_min']:,.0f} episodes/min"))
    started = time.perf_counter()
    with stop_on_signals() as (stop, received):
        rows = execute_trials(base, trials, sweep_dir, stop=stop, on_row=on_row, on_rows=lambda rows: write_tables(sweep_dir, spec, rows),
                              ray=args.ray, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
    if args.json:
        print_json({"sweep_dir": str(sweep_dir), "rows": ranked(rows)})
    console.print(sweep_table(ranked(rows), list(grid), f"Sweep ranked by validation score ({time.perf_counter() - started:.1f} s)",
                              console.width))
    best = best_trial_dsr(rows, sweep_dir)
    if best:
        console.print(f"deflated Sharpe of the top trial ({best['trial']}, validation score {best['val_score']:.2f}) among "
                      f"{best['candidates']} trials: {best['dsr']:.2f}", highlight=False)
    console.print(f"[dim]{sweep_dir / 'sweep.csv'}[/]")
    return EXIT_SIGNAL.get(received[0], 130) if received else 0


def cmd_bench(args) -> int:
    import json

    from engine.bench import bench_config, default_cases, run_bench, run_data_sizes, sized_data
    from engine.monitor import resolve_device
    from engine.runs import prepare_data

    if args.out:
        folder = Path(args.out).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UsageError(f"--out {args.out}: folder {folder} does not exist or is not writable")
    if args.days:
        sized_data(args.data, args.days[0])  # refuse data that is not synthetic before anything runs
    base = bench_config(args.data, args.episode_steps, args.device, args.update_minibatch, args.algorithm)
    device, reason = resolve_device(base.device)
    cases = default_cases(device, args.quick, args.num_envs, args.amp, args.compile, args.cuda_graphs)
    console, progress = make_console(stderr=args.json), make_console(stderr=True)  # progress never lands in a redirected file
    progress.print(f"[bold]asym-tui bench[/] on {device.type} ({reason}); torch {__import__('torch').__version__}; "
                  f"{len(cases)} configurations ({args.algorithm})" + (f" × {len(args.days)} data lengths" if args.days else "")
                  + f", {args.episode_steps}-step episodes, warm-up excluded")
    on_result = lambda r: progress.print(f"  {r.case.label:<34} {r.episodes_per_min:>10,.0f} eps/min {r.steps_per_s:>12,.0f} steps/s"
                                        + (f"  [yellow]{r.error}[/]" if r.error else ""))
    iterations = 1 if args.quick else args.iterations
    if args.days:
        report = run_data_sizes(args.days, cases, base, args.warmup, iterations, on_result=on_result)
    else:
        report = run_bench(cases, base, prepare_data(base), args.warmup, iterations, on_result=on_result)
    console.print(bench_table(report, console.width))
    if args.days:
        console.print(data_curve_table(report, console.width))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        progress.print(f"JSON written to {args.out}")
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def data_curve_table(report: dict, width: int):
    """bench --days: each configuration's throughput and peak memory against the length of its data."""
    cells = [(row["configuration"], f"{row['days']:,}", f"{row['train_bars']:,}", number(row["steps_per_s"], "{:,.0f}"),
              number(row["optimizer_steps_per_s"], "{:,.1f}"), number(row["peak_host_mb"], "{:,.0f}")) for row in report["curve"]]
    columns = ("configuration", "days", "train bars", "env-steps/s", "updates/s", "peak host MB")
    return rich_table("Throughput and memory against data length", columns, cells, width)


def run_app(args) -> int:
    from asym_tui.app import AsymApp

    app = AsymApp(data=args.data or "synthetic", preset=args.preset, out_dir=args.out or "runs")
    app.run()
    if app.run_dirs:
        make_console().print("Runs saved this session:\n" + "\n".join(f"  {path}" for path in app.run_dirs), highlight=False)
    return 0


def run() -> None:
    """The `asym-tui` console command: `main`, then a quick exit. Python's orderly teardown of every imported
    module (torch's, pandas', matplotlib's) takes about a second after the work is done and every file is
    written and closed; it is skipped unless something still relies on exit handlers or is still running:
    Ray (its local cluster is shut down at exit), child processes, or threads other than this one."""
    code = main()
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread() and not thread.daemon]
    if "ray" in sys.modules or multiprocessing.active_children() or others:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said on it
            pass
    os._exit(int(code or 0))


if __name__ == "__main__":
    run()
