"""Walk-forward and combinatorial purged cross-validation: does an agent have an edge out of sample, after
fees, with evidence over many folds and seeds rather than one lucky split?

- Walk-forward (rolling origin): fold i trains from scratch on [start + i·step, + train) — validation is
  the latest part of it — and is judged on the test window that starts `purge` bars after the train
  window ends (at least the macro window, so no feature of a test bar is computed from training bars).
- CPCV (López de Prado): the data in N groups by time; every choice of K test groups is one split,
  trained on the other groups minus a purge (before) and an embargo (after) around each test group; the
  test results recombine into φ = K/N · C(N, K) backtest paths that each cover the whole data once.

Every fold × candidate (trainer, grid point) × seed is a normal run folder, through the sweep executor
(local processes or Ray). The verdict compares the chosen policies with buy-and-hold, flat, the trailing
rule and the best constant position (hindsight) per fold, aggregates folds × seeds (mean, IQM, a 95 %
bootstrap interval, the share of folds beating buy-and-hold and flat) and, over the candidates, the
probability of backtest overfitting (engine/stats.py). Selection's "no edge ⇒ flat" rule means a policy
that trades out of sample beat flat and the best constant on its validation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from engine.config import ConfigError, RunConfig, load_config
from engine.data import load_candles
from engine.errors import RunError
from engine.features import INDICATOR_WARMUP, utc_times
from engine.runs import atomic_write_json, atomic_write_text, check_output_dir, read_json, read_summary
from engine.metrics import periods_per_year
from engine.stats import backtest_overfitting, bootstrap_interval, iqm, probability_of_improvement
from engine.sweep import Trial, execute_trials, parse_grid

BASELINES = ("buy_and_hold", "flat", "best_constant", "trailing_rule")
RECORD = "walkforward.json"


@dataclass(frozen=True)
class Fold:
    name: str
    train: tuple[pd.Timestamp, pd.Timestamp]  # the data training and validation may use
    tests: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]  # one window (walk-forward) or K groups (CPCV)

    def overrides(self, purge_bars: int) -> dict:
        pair = lambda window: f"{window[0].isoformat()}/{window[1].isoformat()}"
        return {"train_window": pair(self.train), "test_windows": ",".join(map(pair, self.tests)), "purge_bars": purge_bars}


MIN_COVERAGE = 0.9  # a fold needs this share of its train and test windows' bars in the data (gaps between files)


@dataclass(frozen=True)
class Span:
    start: pd.Timestamp
    end: pd.Timestamp  # one bar after the last
    bar: pd.Timedelta
    stamps: np.ndarray  # every bar's time (datetime64, UTC), sorted, once per time across symbols

    def coverage(self, start: pd.Timestamp, end: pd.Timestamp) -> float:
        """The share of the bars of [start, end) that the data holds."""
        first, last = np.searchsorted(self.stamps, [np.datetime64(t.tz_convert(None), "ns") for t in (start, end)])
        return (last - first) / max(1.0, (end - start) / self.bar)


def data_span(source: str) -> Span:
    candles = load_candles(source)
    bar = candles.attrs["timeframe"]
    return Span(candles["timestamp"].min(), candles["timestamp"].max() + bar, bar, np.unique(utc_times(candles["timestamp"])))


def length_label(delta: pd.Timedelta) -> str:
    """A window's length as people write it: 40d, 9h20m, 3d15h40m."""
    minutes = int(round(delta / pd.Timedelta(minutes=1)))
    days, rest = divmod(minutes, 1440)
    parts = (f"{days}d" if days else "", f"{rest // 60}h" if rest // 60 else "", f"{rest % 60}m" if rest % 60 else "")
    return "".join(parts) or "0m"


def default_purge(config: RunConfig) -> int:
    return config.macro_window + INDICATOR_WARMUP


def walk_forward_folds(span: Span, train: pd.Timedelta, test: pd.Timedelta, step: pd.Timedelta, purge_bars: int) -> list[Fold]:
    """Rolling origin: equal train windows moved by `step`, each followed after the purge by its test window;
    positions where the data (files with gaps between them) does not cover both windows are passed over."""
    gap = purge_bars * span.bar
    folds, start = [], span.start
    while start + train + gap + test <= span.end:
        test_start = start + train + gap
        if min(span.coverage(start, start + train), span.coverage(test_start, test_start + test)) >= MIN_COVERAGE:
            folds.append(Fold(f"fold{len(folds):02d}", (start, start + train), ((test_start, test_start + test),)))
        start += step
    if not folds:
        raise ConfigError(f"no fold fits the data: each needs train {length_label(train)} + purge {length_label(gap)} + test "
                          f"{length_label(test)} of (nearly) gap-free bars, and the data spans {length_label(span.end - span.start)}; "
                          "choose shorter windows (data inspect lists the continuous stretches)")
    return folds


def default_windows(span: Span, purge_bars: int, folds: int = 4) -> tuple[pd.Timedelta, pd.Timedelta]:
    """Without --train/--test: half the bars to train, the rest in `folds` test windows (stepped by one test)."""
    bars = len(span.stamps)
    return bars // 2 * span.bar, max(1, (bars - bars // 2 - purge_bars) // folds) * span.bar


def cpcv_folds(span: Span, groups: int, test_groups: int) -> tuple[list[Fold], list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """N groups holding equal numbers of bars; every choice of K of them is one split's test set (the purge
    and embargo around each come from the run config)."""
    if not 2 <= groups <= 12 or not 1 <= test_groups < groups:
        raise ConfigError(f"--cpcv N,K needs 2 <= N <= 12 groups and 1 <= K < N test groups, got {groups},{test_groups}")
    cuts = [pd.Timestamp(span.stamps[len(span.stamps) * i // groups], tz="UTC") for i in range(groups)]
    edges = [span.start, *cuts[1:], span.end]
    windows = list(zip(edges[:-1], edges[1:]))
    folds = [Fold(f"split{index:02d}", (span.start, span.end), tuple(windows[g] for g in chosen))
             for index, chosen in enumerate(itertools.combinations(range(groups), test_groups))]
    return folds, windows


def candidates(trainers: list[str], grid: dict[str, list]) -> list[tuple[str, dict]]:
    """(label, run-config overrides) of everything compared: trainers × grid points."""
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]
    return [(" ".join([trainer, *(f"{k}={v}" for k, v in point.items())]), {"trainer": trainer, **point})
            for trainer in trainers for point in points]


def trial_name(fold: Fold, label: str, seed: int) -> str:
    return f"{fold.name}-{label.replace(' ', '_').replace('=', '-')}-seed{seed}"


def plan_trials(folds: list[Fold], compared: list[tuple[str, dict]], seeds: list[int], purge_bars: int) -> list[tuple[Trial, Fold, str]]:
    """(trial, its fold, its candidate's label) for every fold × candidate × seed."""
    return [(Trial(trial_name(fold, label, seed), {**fold.overrides(purge_bars), **params}, seed), fold, label)
            for fold in folds for label, params in compared for seed in seeds]


# --- results -------------------------------------------------------------------------------------------

def fold_row(trial: Trial, fold: Fold, label: str, folder: Path) -> dict:
    """One fold × candidate × seed: the chosen policy next to the baselines on the test window."""
    row = {"trial": trial.name, "fold": fold.name, "candidate": label, "seed": trial.seed,
           "test_start": fold.tests[0][0].isoformat(), "test_end": fold.tests[-1][1].isoformat()}
    try:
        summary = read_summary(folder / trial.name)
    except RunError as exc:
        return {**row, "status": "missing", "error": str(exc)}
    test, selected = summary.test or {}, summary.selected_model or {}
    if not test:
        return {**row, "status": summary.status, "error": summary.stop_reason}
    agent = test["agent"]
    return {**row, "status": summary.status, "error": "", "agent": agent["sharpe"], "agent_psr": agent.get("psr"),
            "agent_return": agent["total_return"], "trades": agent["trades"], "long": agent["long"], "short": agent["short"],
            **{name: test[name]["sharpe"] for name in BASELINES}, "best_constant_position": test["best_constant"].get("position"),
            "no_edge": bool(selected.get("no_edge")), "val_score": selected.get("best_val_score", selected.get("val_score")),
            "edge_bar": selected.get("edge_bar"), "fee_model": summary.fee_model}


def fold_outcome(executed: dict, trial: Trial, fold: Fold, label: str, folder: Path) -> dict:
    """The fold row of a run that just ended; a run that failed before writing its summary keeps the executor's error."""
    row = fold_row(trial, fold, label, folder)
    return {**row, "status": executed["status"], "error": executed["error"]} if row["status"] == "missing" else row


def test_returns(folder: Path, trial: Trial) -> pd.Series:
    """The chosen policy's per-bar test returns, by the timestamp of the bar they end at."""
    equity = pd.read_csv(folder / trial.name / "equity_test.csv", usecols=["timestamp", "agent_equity"], parse_dates=["timestamp"])
    values = equity["agent_equity"].to_numpy()
    return pd.Series(values[1:] / values[:-1] - 1, index=utc_times(equity["timestamp"])[1:])


def summarize(rows: list[dict]) -> dict:
    """Per candidate, over folds × seeds: mean, IQM, interval, shares of folds beating buy-and-hold and flat."""
    frame = pd.DataFrame([row for row in rows if "agent" in row])
    result = {}
    for label, part in frame.groupby("candidate", sort=False) if len(frame) else ():
        agent = part.pivot_table(index="fold", columns="seed", values="agent", aggfunc="mean")
        buy_and_hold = part.groupby("fold")["buy_and_hold"].mean().loc[agent.index]
        fold_means = agent.mean(axis=1)
        trading = part[part["trades"] > 0]
        result[label] = {
            "folds": len(agent), "seeds": agent.shape[1], "per_fold": fold_means.round(4).to_dict(),
            "mean": float(agent.stack().mean()), "iqm": float(iqm(agent.to_numpy().ravel())),
            "interval": list(bootstrap_interval(agent.to_numpy())),  # folds resampled (within each seed)
            "beats_buy_and_hold": float((fold_means > buy_and_hold).mean()), "beats_flat": float((fold_means > 0).mean()),
            "p_beats_buy_and_hold": probability_of_improvement(agent.to_numpy().T, buy_and_hold.to_numpy()[None, :]),
            "buy_and_hold_mean": float(buy_and_hold.mean()), "trailing_rule_mean": float(part["trailing_rule"].mean()),
            "trading_runs": len(trading), "runs": len(part), "no_edge_runs": int(part["no_edge"].sum()),
            "trading_without_validation_edge": int(trading["no_edge"].sum()),  # must be 0: do no harm
        }
    return result


def overfitting(folder: Path, planned: list[tuple[Trial, Fold, str]], rows: list[dict]) -> dict | None:
    """PBO over every candidate × seed, from their out-of-sample returns over all folds (a bar tested by several
    splits, as in CPCV, takes the mean of its returns)."""
    done = {row["trial"] for row in rows if "agent" in row}
    columns: dict[str, list[pd.Series]] = {}
    for trial, _, label in planned:
        if trial.name in done:
            columns.setdefault(f"{label} seed {trial.seed}", []).append(test_returns(folder, trial))
    if len(columns) < 2:
        return None
    matrix = pd.DataFrame({key: pd.concat(parts).groupby(level=0).mean() for key, parts in columns.items()}).dropna()
    distinct = matrix.T.drop_duplicates().T
    groups = min(16, len(matrix) // 200 * 2)  # blocks of at least 100 bars
    if distinct.shape[1] < 2 or groups < 2:
        reason = "fewer than two candidates differ (all held flat, say)" if distinct.shape[1] < 2 else "too few test bars"
        return {"pbo": None, "reason": reason, "names": list(matrix.columns)}
    return {**backtest_overfitting(matrix.to_numpy(), groups), "names": list(matrix.columns)}


def cpcv_paths(folder: Path, planned: list[tuple[Trial, Fold, str]], windows: list, bar_seconds: float) -> dict[str, list[float]]:
    """CPCV's test results recombined into φ backtest paths per candidate × seed (path p takes each group from
    the p-th split that tested it), and the annualized Sharpe of each path."""
    per_year = periods_per_year(bar_seconds)
    pieces: dict[str, list[list[pd.Series]]] = {}
    for trial, fold, label in planned:
        if not (folder / trial.name / "equity_test.csv").is_file():
            continue
        returns = test_returns(folder, trial)
        groups = pieces.setdefault(f"{label} seed {trial.seed}", [[] for _ in windows])
        for index, window in enumerate(windows):
            if window in fold.tests:
                start, end = (np.datetime64(t.tz_convert(None), "ns") for t in window)
                groups[index].append(returns[(returns.index >= start) & (returns.index < end)])
    paths = {}
    for key, groups in pieces.items():
        sharpes = []
        for path in range(min(len(group) for group in groups)):
            returns = np.concatenate([group[path].to_numpy() for group in groups])
            std = returns.std(ddof=1)
            sharpes.append(float(returns.mean() / std * np.sqrt(per_year)) if std > 0 else 0.0)
        paths[key] = sharpes
    return paths


@dataclass
class WalkForward:
    """A walk-forward (or CPCV) study: its plan, folder and results."""

    folder: Path
    spec: dict
    folds: list[dict]  # each fold's train window and test window(s)
    rows: list[dict]
    aggregate: dict
    pbo: dict | None
    paths: dict | None = None

    def to_json(self) -> dict:
        return {**self.spec, "folder": str(self.folder), "folds": self.folds, "rows": self.rows, "aggregate": self.aggregate, "pbo": self.pbo, "paths": self.paths}


def run_walkforward(base: RunConfig, spec: dict, folds: list[Fold], folder: Path, grid: dict | None = None, windows: list | None = None,
                    stop=None, on_event=None, on_row=None, ray: str | None = None, cpus_per_trial: float = 1.0,
                    gpus_per_trial: float = 0.0) -> WalkForward:
    """Every fold × candidate × seed through the executor (finished ones are skipped: resume), then the verdict.
    `on_row` gets each fold × candidate × seed's row (`fold_row`) as its run ends; `windows`: CPCV's groups,
    to recombine the paths."""
    seeds = list(range(base.seed, base.seed + spec["seeds"]))
    planned = plan_trials(folds, candidates(spec["trainers"], grid or {}), seeds, spec["purge_bars"])
    record = {**spec, "folds": [fold_record(fold) for fold in folds]}
    atomic_write_json(folder / RECORD, record)
    by_name = {trial.name: (trial, fold, label) for trial, fold, label in planned}
    outcomes: dict[str, dict] = {}  # each fold row once, as its run ends (or is found finished)

    def report(row: dict) -> None:
        outcomes[row["trial"]] = fold_outcome(row, *by_name[row["trial"]], folder)
        if on_row:
            on_row(outcomes[row["trial"]])
    execute_trials(base, [trial for trial, _, _ in planned], folder, stop=stop, on_event=on_event, on_row=report, ray=ray,
                   cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial)
    rows = [outcomes.get(trial.name) or fold_row(trial, fold, label, folder) for trial, fold, label in planned]
    bar_seconds = spec.get("bar_seconds", 300.0)
    study = WalkForward(folder, spec, record["folds"], rows, summarize(rows), overfitting(folder, planned, rows),
                        cpcv_paths(folder, planned, windows, bar_seconds) if windows else None)
    atomic_write_json(folder / RECORD, study.to_json())
    atomic_write_text(folder / "walkforward.csv", pd.DataFrame(rows).to_csv(index=False))
    return study


def fold_record(fold: Fold) -> dict:
    return {"name": fold.name, "train": [t.isoformat() for t in fold.train], "tests": [[t.isoformat() for t in w] for w in fold.tests]}


SPEC_KEYS = ("source", "preset", "overrides", "mode", "train", "test", "step", "purge_bars", "cpcv", "seeds", "trainers", "grid_args")


def study_spec(preset: str | None, overrides: dict, train: str | None, test: str | None, step: str | None, purge: int | None, seeds: int,
               trainers: str, grid_args: list[str], cpcv: str | None) -> dict:
    """What a study is (and what walkforward.json keeps to resume it), checked before anything trains."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    names = [name.strip() for name in trainers.split(",") if name.strip()]
    if not names or set(names) - {"original", "optimized"}:
        raise ConfigError(f"--trainers {trainers!r}: use optimized, original or original,optimized")
    if cpcv and (train or test or step):
        raise ConfigError("--cpcv makes its own groups: leave out --train, --test and --step")
    if cpcv and not (len(parts := cpcv.split(",")) == 2 and all(p.strip().isdigit() for p in parts)):
        raise ConfigError(f"--cpcv {cpcv!r}: use N,K, e.g. 6,2")
    for text, flag in ((train, "--train"), (test, "--test"), (step, "--step")):
        timedelta(text, flag)
    if "data" in overrides and Path(overrides["data"]).exists():
        overrides = {**overrides, "data": str(Path(overrides["data"]).resolve())}  # folds may run in other folders (Ray)
    base = load_config(preset, overrides)
    return {"source": base.data, "preset": preset, "overrides": {k: v for k, v in overrides.items() if k != "run_name"},
            "mode": "cpcv" if cpcv else "walk-forward", "train": train, "test": test, "step": step,
            "purge_bars": purge if purge is not None else default_purge(base), "cpcv": cpcv, "seeds": seeds, "trainers": names,
            "grid_args": list(grid_args)}


def timedelta(text: str | None, flag: str) -> pd.Timedelta | None:
    if text is None:
        return None
    try:
        value = pd.Timedelta(text)
    except ValueError:
        value = None
    if value is None or value <= pd.Timedelta(0):
        raise ConfigError(f"{flag} {text!r}: use a positive length of time, e.g. 30d, 12h or 2w")
    return value


def plan_study(spec: dict) -> tuple[RunConfig, list[Fold], list | None, dict]:
    """The base run config, the folds (and CPCV's groups) over the data's span, and the grid of candidates."""
    base = load_config(spec["preset"], spec["overrides"])
    purge = spec["purge_bars"]
    if purge < base.macro_window:
        raise ConfigError(f"--purge {purge}: at least the macro window ({base.macro_window} bars), so no test feature reads training bars")
    span = data_span(base.data)
    spec["bar_seconds"] = span.bar.total_seconds()
    windows = None
    if spec["cpcv"]:
        groups, tests = (int(part) for part in spec["cpcv"].split(","))
        folds, windows = cpcv_folds(span, groups, tests)
    else:
        train, test = default_windows(span, purge)
        train, test = timedelta(spec["train"], "--train") or train, timedelta(spec["test"], "--test") or test
        folds = walk_forward_folds(span, train, test, timedelta(spec["step"], "--step") or test, purge)
    return base, folds, windows, parse_grid(spec["grid_args"], base)


def new_study_dir(out_dir: str, name: str | None) -> Path:
    folder = check_output_dir(out_dir) / (name or datetime.now(timezone.utc).strftime("walkforward-%Y%m%d-%H%M%S"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def read_spec(folder: str | Path) -> dict:
    """A study's spec from its folder, to finish it (finished runs are skipped)."""
    record = read_record(folder)
    folds_of(record)  # a record whose folds do not read is refused now, not after training
    return {key: record.get(key) for key in SPEC_KEYS}


def read_record(folder: str | Path) -> dict:
    path = Path(folder) / RECORD
    if not path.is_file():
        raise RunError(f"{folder}: not a walk-forward folder (no {RECORD})")
    record = read_json(path)
    if not {"source", "trainers", "seeds", "purge_bars", "folds"} <= set(record):
        raise RunError(f"{path}: not a walk-forward record")
    return record


def folds_of(record: dict) -> list[Fold]:
    stamp = pd.Timestamp
    return [Fold(f["name"], tuple(map(stamp, f["train"])), tuple(tuple(map(stamp, w)) for w in f["tests"])) for f in record["folds"]]
