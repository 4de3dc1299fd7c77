"""Every figure the command line and the app show goes through here: one formatter for numbers and
missing values, and one builder per table. Builders return rows of strings (the app fills a DataTable
with them) or a Rich table (the command line prints it), choosing fewer columns on a narrow terminal
instead of cutting cells."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from engine.compare import Comparison, ComparisonRow
from engine.events import RunSummary

MISSING = "N/A"
NARROW = 120  # below this many columns, tables keep only the columns that matter most


def number(value, pattern: str = "{:,.2f}") -> str:
    """A number by its format pattern, or N/A when it is missing (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return pattern.format(value)


def clock(seconds: float | None) -> str:
    """Seconds as m:ss (h:mm:ss past an hour)."""
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def stage_text(trainer: str, trainers: Sequence[str]) -> str:
    """"1 of 2: original" during a comparison, else the trainer's name."""
    if len(trainers) > 1 and trainer in trainers:
        return f"{list(trainers).index(trainer) + 1} of {len(trainers)}: {trainer}"
    return trainer


def timing_text(elapsed_s: float, duration_s: float) -> str:
    """"0:12/2:00, 1:48 left" against a duration, else the time used."""
    if not duration_s:
        return clock(elapsed_s)
    return f"{clock(elapsed_s)}/{clock(duration_s)}, {clock(max(0.0, duration_s - elapsed_s))} left"


def result_text(summary: RunSummary) -> str:
    """A finished run in one line: throughput, test Sharpe next to buy-and-hold, unseen series next to the rule."""
    unseen = summary.unseen
    unseen_text = (f"; unseen series Sharpe {unseen['agent_sharpe']:.2f} vs trailing rule {unseen['trailing_rule_sharpe']:.2f}"
                   if unseen else "")
    return (f"{number(summary.throughput.episodes_per_min, '{:,.0f}')} episodes/min, test Sharpe {number(summary.test_metric('agent', 'sharpe'))} "
            f"vs buy-and-hold {number(summary.test_metric('buy_and_hold', 'sharpe'))}{unseen_text}")


UNIT_PATTERNS = {"$": "${:,.2f}", "%": "{:,.1f}%", "MB": "{:,.0f} MB", "s": "{:,.0f} s", "×": "{:,.1f}×", "count": "{:,.0f}", "": "{:,.2f}"}


def comparison_cell(row: ComparisonRow, value: float | None) -> str:
    if row.unit == "fraction":
        return number(None if value is None else 100 * value, "{:.2f}%")
    return number(value, UNIT_PATTERNS[row.unit])


def comparison_cells(comparison: Comparison) -> list[tuple[str, str, str, str]]:
    """(metric, left, right, winner) for every row of the comparison, speedup included (means over seeds)."""
    return [(row.metric, comparison_cell(row, row.left), comparison_cell(row, row.right), comparison.winner(row))
            for row in comparison.rows()]


def rich_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], width: int = 200,
               keep: Sequence[str] | None = None, left: Sequence[str] = ()) -> Table:
    """A Rich table; narrower than NARROW columns it keeps only `keep`, drops the rules, and never cuts a number."""
    narrow = width < NARROW
    shown = [index for index, column in enumerate(columns) if not (narrow and keep is not None and column not in keep)]
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, show_edge=False) if narrow else \
        Table(title=title)
    for index in shown:
        if columns[index] in left or index == 0:  # text: wraps between words, never narrower than its longest word
            longest = max((len(word) for row in rows for word in str(row[index]).split()), default=0)
            table.add_column(columns[index], justify="left", min_width=max(longest, len(columns[index])))
        else:
            table.add_column(columns[index], justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    return table


def comparison_title(comparison: Comparison) -> str:
    seeds = max(len(comparison.left.summaries), len(comparison.right.summaries))
    return f"{comparison.left.label} vs {comparison.right.label}" + (f" (means over {seeds} seeds)" if seeds > 1 else "")


def comparison_table(comparison: Comparison, width: int = 200) -> Table:
    return rich_table(comparison_title(comparison), ("metric", *comparison.labels, "winner"), comparison_cells(comparison), width,
                      left=("winner",))


VERDICT_COLUMNS = ("side", "per seed", "mean", "IQM", "95% interval", "worst", "time to quality")


def verdict_cells(verdict: dict) -> list[tuple[str, ...]]:
    """One row per side: each seed's score, mean, IQM, the bootstrap interval, the worst seed, time-to-quality."""
    rows = []
    for label, side in verdict["sides"].items():
        quality = ", ".join("never" if t is None else f"{t:.0f}" for t in side["time_to_quality_s"]) + " s"
        rows.append((label, ", ".join(number(value) for value in side["runs"]), number(side["mean"]), number(side["iqm"]),
                     f"[{number(side['interval'][0])}, {number(side['interval'][1])}]", number(side["worst"]), quality))
    return rows


def verdict_table(verdict: dict, width: int = 200) -> Table:
    return rich_table(f"Verdict: {verdict['measure']}", VERDICT_COLUMNS, verdict_cells(verdict), width,
                      ("side", "per seed", "IQM", "95% interval"), left=("per seed", "time to quality"))


def improvement_text(verdict: dict) -> str:
    """"P(optimized (ppo) > original) = 0.94 [0.78, 1.00]" — rliable's probability of improvement."""
    improvement = verdict.get("probability_of_improvement")
    if not improvement:
        return "the two sides were judged on different measures: no probability of improvement"
    low, high = improvement["interval"]
    return f"P({improvement['of']}) = {improvement['value']:.2f} [{low:.2f}, {high:.2f}] (95% stratified bootstrap)"


METRIC_COLUMNS = ("policy", "return", "Sharpe", "PSR", "Sortino", "max DD", "Calmar", "trades", "win rate", "long", "short", "flat")
NARROW_METRIC_COLUMNS = ("policy", "return", "Sharpe", "max DD", "trades", "long", "short", "flat")


def metrics_cells(by_policy: dict[str, dict]) -> list[tuple[str, ...]]:
    """One row per policy (agent and baselines) in METRIC_COLUMNS order; PSR = P(true Sharpe > 0)."""
    rows = []
    for name, m in by_policy.items():
        label = name.replace("_", " ") + (f" ({m['position']})" if "position" in m else "")
        rows.append((label, number(m.get("total_return") and 100 * m["total_return"], "{:+.2f}%"), number(m.get("sharpe")),
                     number(m.get("psr")), number(m.get("sortino")), number(m.get("max_drawdown") and 100 * m["max_drawdown"], "{:+.2f}%"),
                     number(m.get("calmar")), number(m.get("trades", 0), "{:,}"), number(m.get("win_rate") and 100 * m["win_rate"], "{:.0f}%"),
                     *(number(m.get(side) and 100 * m[side], "{:.0f}%") for side in ("long", "short", "flat"))))
    return rows


def metrics_table(by_policy: dict[str, dict], title: str, width: int = 200) -> Table:
    return rich_table(title, METRIC_COLUMNS, metrics_cells(by_policy), width, NARROW_METRIC_COLUMNS)


SERIES_COLUMNS = ("symbol", "agent Sharpe", "agent return", "trades", "buy-and-hold", "trailing rule", "best constant")


def series_table(by_series: dict[str, dict], title: str, width: int = 200) -> Table:
    """One row per symbol: the agent next to buy-and-hold, the rule and the best constant (Sharpe)."""
    cells = [(name, number(p["agent"]["sharpe"]), number(100 * p["agent"]["total_return"], "{:+.2f}%"), number(p["agent"].get("trades", 0), "{:,}"),
              number(p["buy_and_hold"]["sharpe"]), number(p["trailing_rule"]["sharpe"]), number(p["best_constant"]["sharpe"]))
             for name, p in by_series.items()]
    return rich_table(title, SERIES_COLUMNS, cells, width)


FOLD_COLUMNS = ("fold", "test window", "candidate", "agent", "trades", "buy-and-hold", "flat", "best const. (hindsight)", "trailing rule",
                "validation")
FOLD_NARROW = ("fold", "agent", "trades", "buy-and-hold", "trailing rule", "validation")


def walkforward_table(rows: list[dict], title: str, width: int = 200) -> Table:
    """One row per fold and candidate (means over seeds): the chosen policy next to the baselines out of sample;
    "validation" says whether its validation showed an edge (else it held flat)."""
    frame = pd.DataFrame([row for row in rows if "agent" in row])
    cells = []
    for (fold, candidate), part in frame.groupby(["fold", "candidate"], sort=False) if len(frame) else ():
        edge = "no edge: flat" if part["no_edge"].all() else "edge" if not part["no_edge"].any() else f"edge {int((~part['no_edge']).sum())}/{len(part)}"
        window = f"{part['test_start'].iloc[0][:10]}–{part['test_end'].iloc[0][:10]}"
        cells.append((fold, window, candidate, number(part["agent"].mean()), number(part["trades"].mean(), "{:,.0f}"),
                      number(part["buy_and_hold"].mean()), number(part["flat"].mean()),
                      f"{number(part['best_constant'].mean())} ({part['best_constant_position'].iloc[0]})", number(part["trailing_rule"].mean()), edge))
    failed = [row for row in rows if "agent" not in row]
    table = rich_table(title, FOLD_COLUMNS, cells, width, FOLD_NARROW, left=("test window", "candidate", "best const. (hindsight)", "validation"))
    if failed:
        table.caption = f"{len(failed)} run(s) without a result: " + "; ".join(f"{row['trial']} ({row['status']})" for row in failed[:3])
    return table


AGGREGATE_COLUMNS = ("candidate", "folds × seeds", "mean", "IQM", "95% interval", "beats B&H", "beats flat", "P(> B&H)", "trading runs",
                     "B&H mean")
AGGREGATE_NARROW = ("candidate", "IQM", "95% interval", "beats B&H", "beats flat")


def walkforward_aggregate_table(aggregate: dict, width: int = 200) -> Table:
    cells = [(label, f"{a['folds']} × {a['seeds']}", number(a["mean"]), number(a["iqm"]), f"[{number(a['interval'][0])}, {number(a['interval'][1])}]",
              f"{a['beats_buy_and_hold']:.0%}", f"{a['beats_flat']:.0%}", number(a["p_beats_buy_and_hold"]),
              f"{a['trading_runs']}/{a['runs']}", number(a["buy_and_hold_mean"])) for label, a in aggregate.items()]
    return rich_table("Aggregate over folds and seeds (out-of-sample Sharpe)", AGGREGATE_COLUMNS, cells, width, AGGREGATE_NARROW,
                      left=("candidate",))


def overfitting_text(pbo: dict | None) -> str:
    if not pbo:
        return "PBO: needs at least two candidates (--seeds 2, --trainers original,optimized or --grid) and enough test bars"
    if pbo["pbo"] is None:
        return f"PBO not defined: {pbo['reason']}"
    return (f"probability of backtest overfitting (CSCV, {pbo['groups']} blocks, {pbo['splits']:,} splits, {pbo['candidates']} candidates): "
            f"{pbo['pbo']:.2f} — the chance that the candidate best in sample is below the median out of sample")


FOLD_RUN_COLUMNS = ("fold", "agent", "buy-and-hold", "flat", "trailing rule", "best const. (hindsight)", "trades", "validation", "candidate",
                    "seed", "test window")


def fold_run_cells(row: dict) -> tuple[str, ...]:
    """One fold × candidate × seed as the app's table shows it when the run ends (one without a result says why)."""
    window = f"{row['test_start'][:10]}–{row['test_end'][:10]}"
    if "agent" not in row:
        return (row["fold"], row["status"], *[""] * 6, row["candidate"], str(row["seed"]), window)
    return (row["fold"], number(row["agent"]), number(row["buy_and_hold"]), number(row["flat"]), number(row["trailing_rule"]),
            f"{number(row['best_constant'])} ({row['best_constant_position']})", number(row["trades"], "{:,}"),
            "no edge: flat" if row["no_edge"] else "edge", row["candidate"], str(row["seed"]), window)


def walkforward_aggregate_cells(aggregate: dict) -> list[tuple[str, ...]]:
    """One row per candidate in AGGREGATE_COLUMNS order (as walkforward_aggregate_table prints them)."""
    return [(label, f"{a['folds']} × {a['seeds']}", number(a["mean"]), number(a["iqm"]), f"[{number(a['interval'][0])}, {number(a['interval'][1])}]",
             f"{a['beats_buy_and_hold']:.0%}", f"{a['beats_flat']:.0%}", number(a["p_beats_buy_and_hold"]),
             f"{a['trading_runs']}/{a['runs']}", number(a["buy_and_hold_mean"])) for label, a in aggregate.items()]


HISTORY_COLUMNS = ("", "run", "trainer", "status", "episodes/min", "test Sharpe", "B&H Sharpe", "final portfolio", "device")


def history_cells(name: str, trainer: str, summary: RunSummary, marked: bool) -> tuple[str, ...]:
    return ("✓" if marked else "", name, trainer, summary.status, number(summary.throughput.episodes_per_min, "{:,.0f}"),
            number(summary.test_metric("agent", "sharpe")), number(summary.test_metric("buy_and_hold", "sharpe")),
            number(summary.final_portfolio, "${:,.2f}"), summary.device)


SWEEP_FIXED = ("rank", "trial")
SWEEP_FIGURES = ("seed", "status", "episodes/min", "steps/s", "val score", "val Sharpe", "test Sharpe", "test max DD", "test return")
SWEEP_NARROW = ("trial", "status", "val score", "test Sharpe", "test return")  # rows stay in rank order


def sweep_table(rows: list[dict], axes: list[str], title: str, width: int = 200) -> Table:
    cells = []
    for rank, row in enumerate(rows, 1):
        status = row["status"] + (f" ({row['error'][:60]})" if row["error"] else "")
        cells.append((str(rank), row["trial"], *(str(row.get(axis)) for axis in axes), str(row["seed"]), status,
                      number(row["episodes_per_min"], "{:,.0f}"), number(row["steps_per_s"], "{:,.0f}"), number(row.get("val_score")),
                      number(row["val_sharpe"]), number(row["test_sharpe"]),
                      number(row["test_max_drawdown"] and 100 * row["test_max_drawdown"], "{:.2f}%"),
                      number(row["test_return"] and 100 * row["test_return"], "{:+.2f}%")))
    return rich_table(title, (*SWEEP_FIXED, *axes, *SWEEP_FIGURES), cells, width, (*SWEEP_NARROW, *axes), left=("trial", "status"))


BENCH_COLUMNS = ("configuration", "episodes/min", "env-steps/s", "updates/s", "rollout s/it", "update s/it", "warm-up s",
                 "peak host MB", "peak GPU MB", "× original")
BENCH_NARROW = ("configuration", "episodes/min", "env-steps/s", "updates/s", "× original")


def bench_table(report: dict, width: int = 200) -> Table:
    machine = report["machine"]
    cells = []
    for row in report["results"]:
        if row["error"] and not row["episodes_per_min"]:
            cells.append((row["label"], f"failed: {row['error']}", *[""] * 8))
            continue
        cells.append((row["label"], number(row["episodes_per_min"], "{:,.0f}"), number(row["steps_per_s"], "{:,.0f}"),
                      number(row["optimizer_steps_per_s"], "{:,.1f}"), number(row["rollout_s"], "{:.3f}"),
                      number(row["update_s"], "{:.3f}"), number(row["warmup_s"], "{:.1f}"), number(row["peak_host_mb"], "{:,.0f}"),
                      number(row["peak_device_mb"], "{:,.0f}"), number(row["ratio"], "{:,.1f}×")))
    title = (f"Throughput on {machine.get('gpu', machine['processor'])} ({machine['device']}, torch {machine['torch']}, "
             f"{report['episode_steps']}-step episodes)")
    return rich_table(title, BENCH_COLUMNS, cells, width, BENCH_NARROW)


def doctor_table(facts: dict) -> Table:
    """What doctor found; every value is escaped, since probe details and reasons may hold brackets."""
    table = Table(title="asym-tui doctor", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("torch", escape(f"{facts['torch']} (Python {facts['python']}, {facts['platform']})"))
    table.add_row("device (auto)", f"[bold]{escape(facts['device'])}[/] — {escape(facts['device_reason'])}")
    gpus = facts["gpu"]
    table.add_row("GPU", escape("; ".join(f"{k}: {v}" for k, v in gpus.items())) if gpus else "none found through NVML")
    table.add_row("CPU", escape(facts["cpu"]))
    table.add_row("memory", escape(facts["memory"]))
    for probe in facts["probes"]:
        mark = "[green]works[/]" if probe["works"] else "[yellow]not available[/]"
        table.add_row(escape(probe["name"]), f"{mark} — {escape(probe['detail'])}")
    preset = escape(facts["recommended_preset"])
    table.add_row("recommended preset", f"[bold cyan]{preset}[/]  (asym-tui train --preset {preset})")
    return table
