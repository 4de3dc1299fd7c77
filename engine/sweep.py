"""Sweeps: a grid of runs (any run-config field as an axis, times seeds), one run folder per trial.

`execute_trials` is the executor every many-run command shares (sweep, compare --seeds, walkforward).
The local executor runs trials one after another in this process and needs nothing extra. The Ray
executor runs the same trials through Ray Tune (`tune.Tuner` with `grid_search`), on a local Ray
instance or a cluster, with fractional GPUs per trial. Both write the same `sweep.csv` / `sweep.json`:
one row per trial, ranked by the validation score that also selects each run's model (mean Sharpe on
validation and its mirror image; test metrics are shown, never used for ranking). `--resume` skips
completed trials and reruns unfinished ones in their own folders.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from engine.config import ConfigError, RunConfig, apply_overrides, config_fields
from engine.events import RunSummary
from engine.stats import deflated_score
from engine.runs import RunError, atomic_write_json, atomic_write_text, check_output_dir, execute_run, read_json, read_summary

TABLE_COLUMNS = ("trial", "seed", "status", "episodes_per_min", "steps_per_s", "val_score", "val_sharpe", "test_sharpe",
                 "test_max_drawdown", "test_return", "error")


@dataclass(frozen=True)
class Trial:
    name: str  # also its run folder's name
    params: dict  # grid values
    seed: int


def parse_grid(items: list[str], base: RunConfig) -> dict[str, list]:
    """['num_envs=16,32', 'lr_micro=3e-4,5e-4'] → {'num_envs': [16, 32], 'lr_micro': [0.0003, 0.0005]}, validated."""
    grid: dict[str, list] = {}
    known = config_fields()
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise ConfigError(f"--grid {item!r}: use KEY=V1,V2,...")
        if key not in known:
            raise ConfigError(f"--grid {item!r}: unknown key {key!r}; accepted keys: {', '.join(known)}")
        if key in grid:
            raise ConfigError(f"--grid {item!r}: {key} is already an axis; give all its values at once ({key}=V1,V2,...)")
        grid[key] = [getattr(apply_overrides(base, {key: v.strip()}, f"--grid {key}"), key) for v in values.split(",") if v.strip()]
    return grid


def make_trials(grid: dict[str, list], seeds: int, first_seed: int) -> list[Trial]:
    keys = list(grid)
    trials = []
    for index, (values, seed_offset) in enumerate(itertools.product(itertools.product(*grid.values()), range(seeds))):
        trials.append(Trial(f"trial-{index:03d}", dict(zip(keys, values)), first_seed + seed_offset))
    return trials


SWEEP_RECORD_KEYS = {"preset", "grid_args", "seeds", "overrides"}


def read_sweep_record(sweep_dir: str | Path) -> dict:
    """What `sweep --resume` reruns: the preset, grid, seeds and overrides a sweep folder was started with."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise RunError(f"{sweep_dir}: not a sweep folder (no sweep.json)")
    record = read_json(path)
    if not SWEEP_RECORD_KEYS <= set(record):
        raise RunError(f"{path}: not a sweep record (missing preset, grid_args, seeds or overrides)")
    return record


def trial_config(base: RunConfig, trial: Trial, sweep_dir: Path) -> RunConfig:
    return apply_overrides(base, {**trial.params, "seed": trial.seed, "out_dir": str(sweep_dir), "run_name": trial.name},
                           f"sweep trial {trial.name}")


def finished_row(trial: Trial, sweep_dir: Path) -> dict | None:
    """The row of a trial that already completed (for --resume), else None. A trial folder left
    unfinished (stopped, failed, unreadable) is removed, so the trial reruns under its own name."""
    folder = sweep_dir / trial.name
    try:
        summary = read_summary(folder)
        if summary.status == "completed" and summary.test:
            return summary_row(trial, summary)
    except RunError:
        pass
    if folder.is_dir():
        shutil.rmtree(folder)
    return None


def summary_row(trial: Trial, summary: RunSummary) -> dict:
    test, validation = summary.test["agent"], summary.validation["agent"]
    return {"trial": trial.name, **trial.params, "seed": trial.seed, "status": summary.status,
            "episodes_per_min": summary.throughput.episodes_per_min, "steps_per_s": summary.throughput.steps_per_s,
            "val_score": (summary.selected_model or {}).get("val_score"),
            "val_sharpe": validation["sharpe"], "test_sharpe": test["sharpe"], "test_max_drawdown": test["max_drawdown"],
            "test_return": test["total_return"], "error": ""}


def failed_row(trial: Trial, status: str, error: str) -> dict:
    return {"trial": trial.name, **trial.params, "seed": trial.seed, "status": status, "episodes_per_min": None,
            "steps_per_s": None, "val_score": None, "val_sharpe": None, "test_sharpe": None, "test_max_drawdown": None, "test_return": None,
            "error": error}


def run_trial(base: RunConfig, trial: Trial, sweep_dir: Path, stop: threading.Event | None = None, on_event=None) -> dict:
    """One trial as a normal run folder; a failure becomes a row with its error, never an exception."""
    try:
        outcome = execute_run(trial_config(base, trial, sweep_dir), on_event=on_event, stop=stop)
    except Exception as exc:  # a failed trial is recorded; the sweep goes on
        return failed_row(trial, "failed", f"{type(exc).__name__}: {exc}")
    summary = outcome.summary
    if summary.status != "completed":
        return {**summary_row(trial, summary), "error": summary.stop_reason}
    return summary_row(trial, summary)


def ranked(rows: list[dict]) -> list[dict]:
    """By validation score, best first; trials without one (failed, stopped early) last."""
    score = lambda row: row.get("val_score") if row.get("val_score") is not None else row.get("val_sharpe")
    return sorted(rows, key=lambda row: (score(row) is None, -(score(row) or 0.0)))


def best_trial_dsr(rows: list[dict], sweep_dir: Path) -> dict | None:
    """The top trial's validation score deflated for every trial compared (engine.stats.deflated_score)."""
    scored = [row for row in ranked(rows) if row.get("val_score") is not None]
    if len(scored) < 2:
        return None
    summary = read_summary(sweep_dir / scored[0]["trial"])
    bars = int((summary.validation.get("agent") or {}).get("bars") or 0)
    per_year = summary.metric_conventions.get("periods_per_year", 105_120.0)
    if bars < 3:
        return None
    return {"trial": scored[0]["trial"], "val_score": scored[0]["val_score"], "candidates": len(scored),
            "dsr": deflated_score(scored[0]["val_score"], [row["val_score"] for row in scored], bars, per_year)}


def write_tables(sweep_dir: Path, spec: dict, rows: list[dict]) -> None:
    ordered = ranked(rows)
    atomic_write_json(sweep_dir / "sweep.json", {**spec, "trials": ordered, "best_trial_dsr": best_trial_dsr(rows, sweep_dir)})
    atomic_write_text(sweep_dir / "sweep.csv", pd.DataFrame(ordered).to_csv(index=False))


def new_sweep_dir(out_dir: str, name: str) -> Path:
    parent = check_output_dir(out_dir)
    folder = parent / (name or datetime.now(timezone.utc).strftime("sweep-%Y%m%d-%H%M%S"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def execute_trials(base: RunConfig, trials: list[Trial], folder: Path, stop: threading.Event | None = None, on_event=None, on_row=None,
                   on_rows=None, ray: str | None = None, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0) -> list[dict]:
    """Every trial as a run folder under `folder`, here one after another or through Ray (`ray`: "local" or
    a cluster address); finished trials are skipped (resume). `on_row` gets each trial's row as it ends,
    `on_rows` all rows so far (to keep a table on disk current); progress events stream from local runs only."""
    if ray:
        return run_ray(base, trials, folder, None if ray == "local" else ray, cpus_per_trial, gpus_per_trial, on_row, on_rows)
    return run_local(base, trials, folder, stop, on_row, on_rows, on_event)


def run_local(base: RunConfig, trials: list[Trial], folder: Path, stop: threading.Event | None = None, on_row=None, on_rows=None,
              on_event=None) -> list[dict]:
    rows = []
    for trial in trials:
        if stop is not None and stop.is_set():
            break
        row = finished_row(trial, folder) or run_trial(base, trial, folder, stop, on_event)
        rows.append(row)
        for callback, value in ((on_rows, rows), (on_row, row)):
            if callback:
                callback(value)
    return rows


def run_ray(base: RunConfig, trials: list[Trial], folder: Path, address: str | None, cpus_per_trial: float, gpus_per_trial: float,
            on_row=None, on_rows=None) -> list[dict]:
    """The same trials through Ray Tune: one Tune trial per grid point, resources per trial."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # honour verbose=0: our own table is the report
    import ray
    from ray import tune

    logging.getLogger("ray").setLevel(logging.WARNING)

    done = {trial.name: row for trial in trials if (row := finished_row(trial, folder))}
    pending = [trial for trial in trials if trial.name not in done]
    rows = list(done.values())
    if pending:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 **({} if address else {"num_cpus": max(1, int(len(pending) * cpus_per_trial))}))
        base_values = base.to_dict()

        def trainable(point: dict) -> None:
            trial = Trial(point["name"], point["params"], point["seed"])
            tune.report(run_trial(RunConfig(**base_values), trial, Path(point["folder"])))

        space = {"trial": tune.grid_search([{"name": t.name, "params": t.params, "seed": t.seed, "folder": str(folder)} for t in pending])}
        tuner = tune.Tuner(
            tune.with_resources(lambda config: trainable(config["trial"]), {"cpu": cpus_per_trial, "gpu": gpus_per_trial}),
            param_space=space,
            run_config=tune.RunConfig(name="ray", storage_path=str(folder / "ray"), verbose=0),
        )
        results = tuner.fit()
        by_name = {trial.name: trial for trial in pending}
        for result in results:
            point = result.config["trial"]
            trial = by_name[point["name"]]
            row = failed_row(trial, "failed", f"Ray: {result.error}") if result.error else {k: result.metrics.get(k) for k in
                                                                                           failed_row(trial, "", "")}
            rows.append(row)
            if on_row:
                on_row(row)
    if on_rows:
        on_rows(rows)
    return rows
