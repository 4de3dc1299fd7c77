"""Run folders: every training run writes config.json, metrics.csv, summary.json, checkpoint.pt,
equity_test.csv and report.png under `runs/` (configurable).

What survives what:
- every file is written atomically (temporary file, fsync, rename): a run killed at any moment
  (kill -9 included) leaves only whole files; temporaries of dead processes are removed next time;
- a write that fails (disk full, file-size limit) removes its temporary file and keeps the last good
  copy; the run stops, says so, and its last checkpoint stays usable;
- a run folder is locked while a process trains in it: a second `--resume` of it is refused;
- checkpoints are loaded as plain data only (`weights_only`): a file that holds code is refused."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import platform
import shutil
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.config import RunConfig, apply_overrides, trading_costs
from engine.data import MAX_GAP_BARS, load_candles
from engine.errors import RunError
from engine.files import WriteError, atomic_write_bytes, atomic_write_json, atomic_write_text, remove_stale_temporaries
from engine.events import Learning, Resources, RunSummary, Throughput
from engine.evaluation import evaluate_split, unseen_report, unseen_sources
from engine.features import MarketSplits, Normalizer, prepare_splits, split_windows
from engine.selection import synthetic_validation_series
from engine.metrics import periods_per_year
from engine.model import layer_counts, parameter_counts
from engine.monitor import check_num_envs
from engine.loop import Trainer, TrainResult
from engine.trainers import make_trainer
from engine.checkpoints import VERSION, load_checkpoint, save_checkpoint

MIN_FREE_BYTES = 50 * 2**20
QUALITY_FRACTION = 0.5  # time-to-quality: first validation score at this fraction of the trailing rule's
RUN_FILES = ("config.json", "metrics.csv", "summary.json", "checkpoint.pt", "equity_test.csv", "report.png")


def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on the run folder for as long as the returned file stays open."""
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunError(f"{run_dir} is in use by another asym-tui process; wait for it to finish or stop it first") from None
    return handle


# --- folders -----------------------------------------------------------------------------------------

def check_output_dir(out_dir: str | Path) -> Path:
    """Refuse, before any training, an output folder that can't be created, written or has no space."""
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"output folder {folder} is not writable ({exc.strerror or exc})") from exc
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise RunError(f"output folder {folder} has only {free / 2**20:.0f} MiB free; need at least {MIN_FREE_BYTES / 2**20:.0f} MiB")
    return folder


def new_run_dir(parent: Path, config: RunConfig) -> Path:
    """A fresh run folder under `parent` (already checked by `check_output_dir`)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = config.run_name or f"{stamp}-{config.trainer}" + (f"-{config.preset}" if config.preset else "")
    candidate, suffix = parent / base, 2
    while os.path.lexists(candidate):  # a dangling link counts as taken
        candidate, suffix = parent / f"{base}-{suffix}", suffix + 1
    candidate.mkdir(parents=True)
    return candidate


# --- one run, start to finish ------------------------------------------------------------------------

@dataclass
class RunOutcome:
    run_dir: Path
    summary: RunSummary
    result: TrainResult


def prepare_data(config: RunConfig) -> MarketSplits:
    """Candles to normalized splits; loading warnings and gaps become notes shown in the run's log."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        candles = load_candles(config.data)
    splits = prepare_splits(candles, config.macro_window, config.micro_window, config.train_fraction, config.validation_fraction,
                            config.mirror_train, split_windows(config, candles))
    notes = [str(warning.message) for warning in caught]
    if candles.attrs.get("gaps"):
        notes.append(f"{config.data}: {candles.attrs['gaps']:,} gap(s), {candles.attrs['missing_bars']:,} missing bar(s), not filled; "
                     f"gaps over {MAX_GAP_BARS} bars end a segment that episodes never cross")
    selection = synthetic_validation_series(config.data, config.validation_series, splits.normalizer, config.macro_window, config.micro_window)
    return dataclasses.replace(splits, notes=(*notes, *splits.notes), selection_series=selection)


def resume_config(run_dir: str | Path, overrides: dict | None = None) -> RunConfig:
    """The config of an existing run, with overrides such as a new duration."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no config.json)")
    saved = read_json(path).get("config")
    if not isinstance(saved, dict):
        raise RunError(f"{path}: no 'config' in it; not an asym-tui run record")
    for key in ("trainer", "algorithm"):
        if key in (overrides or {}) and overrides[key] != saved.get(key):
            raise RunError(f"{run_dir}: a resumed run keeps its {key} ({saved.get(key)}); start a new run for {overrides[key]}")
    return apply_overrides(RunConfig(), {**saved, **(overrides or {})}, f"resume {run_dir}")


def execute_run(config: RunConfig, on_event=None, stop: threading.Event | None = None,
                resume_dir: str | Path | None = None, splits: MarketSplits | None = None) -> RunOutcome:
    """Load data, train, evaluate on validation and test next to the baselines, write the run folder."""
    run_dir = Path(resume_dir) if resume_dir else None
    checked = check_output_dir(run_dir or config.out_dir)  # before loading data or training
    if config.trainer == "optimized":
        check_num_envs(config.num_envs, config.device)
    lock = lock_run_dir(run_dir) if run_dir else None
    board = TensorBoardLog(False)
    try:
        state = load_checkpoint(run_dir) if run_dir else None
        splits = splits or prepare_data(config)
        if state:
            splits = _renormalized(splits, Normalizer.from_state_dict(state["normalizer"]))
        board = tensorboard_log(config)
        trainer = make_trainer(config, splits, on_event=board.wrap(on_event), stop=stop)
        for note in splits.notes:
            trainer.log("warning", note)
        if state:
            load_trainer_state(trainer, state, run_dir)
            trainer.log("info", f"resumed from {run_dir} at {trainer.episodes:,} episodes")
        if run_dir is None:
            run_dir = new_run_dir(checked, config)
            lock = lock_run_dir(run_dir)
        board.open(run_dir)
        remove_stale_temporaries(run_dir)
        atomic_write_json(run_dir / "config.json", run_record(config, trainer))

        write_failures: list[str] = []

        def checkpoint() -> None:
            try:
                save_checkpoint(run_dir / "checkpoint.pt", trainer, splits.normalizer)
                write_metrics(run_dir, trainer.history)
                atomic_write_json(run_dir / "summary.json", build_summary(config, trainer, trainer_result(trainer, "running"), None).to_json())
            except WriteError as exc:  # keep what was saved last; stop rather than train on without a way to save
                trainer.log("error", f"{exc}; stopping the run")
                trainer.stop.set()
                write_failures.append(str(exc))

        result = trainer.run(checkpoint=checkpoint)
        if write_failures:
            raise WriteError(f"{write_failures[0]}; the run in {run_dir} stopped at its last good checkpoint")
        return finish_run(run_dir, config, trainer, splits, result)
    finally:
        board.close()
        if lock:
            lock.close()


class TensorBoardLog:
    """Progress events as TensorBoard scalars (the metrics.csv series), step = env-steps; off: does nothing."""

    def __init__(self, enabled: bool):
        self.enabled, self.writer, self.pending = enabled, None, []

    def open(self, run_dir: Path) -> None:
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            for event in self.pending:
                self.write(event)
            self.pending = []

    def write(self, event) -> None:
        if self.writer is None:
            self.pending.append(event)
            return
        for key, value in event.row().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{event.trainer}/{key}", value, event.env_steps)

    def wrap(self, on_event):
        if not self.enabled:
            return on_event

        def both(event) -> None:
            if hasattr(event, "env_steps"):
                self.write(event)
            if on_event:
                on_event(event)
        return both

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def tensorboard_log(config: RunConfig) -> TensorBoardLog:
    if config.tensorboard:
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
        except ImportError:
            raise RunError('tensorboard = true needs the tensorboard package: pip install "asym-tui[tensorboard]"') from None
    return TensorBoardLog(config.tensorboard)


def load_trainer_state(trainer: Trainer, state: dict, run_dir: Path) -> None:
    """A checkpoint into a trainer, refusing one made for another network or trainer with one line."""
    try:
        trainer.load_state_dict(state["trainer"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{run_dir}: the checkpoint does not fit this run's trainer or data ({reason})") from exc


def trainer_result(trainer: Trainer, status: str) -> TrainResult:
    return TrainResult(status, "", trainer.last_progress, trainer.history, trainer.messages)


def finish_run(run_dir: Path, config: RunConfig, trainer: Trainer, splits: MarketSplits, result: TrainResult) -> RunOutcome:
    """Final evaluation and every file of the run folder; the checkpoint first, as it matters most.

    The test split is evaluated once, with the weights chosen on validation (`select_best`; the last
    weights get a validation backtest too, to compete) or the last ones."""
    if config.select_best:
        trainer.validate(time.perf_counter())
    save_checkpoint(run_dir / "checkpoint.pt", trainer, splits.normalizer)
    write_metrics(run_dir, trainer.history)
    env_config = config.env_config()
    model, selection = trainer.selected_model()
    if selection.get("no_edge") is False:  # chosen on validation among every validation compared: how much is luck?
        selection.update(trainer.validation_set.verdict(model, [v["val_score"] for v in trainer.validations]))
    evaluations = {name: evaluate_split(model, splits[name], env_config, splits.bar_seconds, config.seed)
                   for name in ("validation", "test")}
    summary = build_summary(config, trainer, result, evaluations)
    summary.selected_model = selection
    summary.test_by_series = {name: {policy: backtest.metrics for policy, backtest in evaluate_split(model, features, env_config, splits.bar_seconds,
                                                                                                       config.seed).items()}
                              for name, features in splits.test.by_series().items()}
    summary.learning = learning_record(config, trainer, model)
    atomic_write_json(run_dir / "summary.json", summary.to_json())
    write_equity(run_dir / "equity_test.csv", splits.test, evaluations["test"], config.initial_equity)
    from engine.report import render_report

    atomic_write_bytes(run_dir / "report.png", render_report(trainer.history, evaluations["test"], splits.test, summary))
    return RunOutcome(run_dir, summary, result)


def learning_record(config: RunConfig, trainer: Trainer, model) -> Learning:
    """What the run learned, judged where a constant position can't look good: the validation score
    against time (time-to-quality), and the chosen model on fresh series it never saw."""
    validation = trainer.validation_set
    target = validation.quality_target(QUALITY_FRACTION)
    reached = next((v["elapsed_s"] for v in trainer.validations if v["val_score"] >= target), None)
    sources = unseen_sources(config.data, config.unseen_series)
    unseen = unseen_report(model, trainer.splits.normalizer, sources, config.env_config(), config.macro_window, config.micro_window) if sources else None
    return Learning(rule_val_score=validation.baselines["trailing_rule"], quality_target=target, time_to_quality_s=reached,
                    validations=list(trainer.validations), unseen=unseen, validation_series=[s.name for s in validation.series],
                    validation_baselines=dict(validation.baselines), validation_noise=validation.noise)


def _renormalized(splits: MarketSplits, normalizer: Normalizer) -> MarketSplits:
    """A resumed run keeps the normalization statistics it was trained with."""
    if np.allclose(splits.normalizer.macro_mean, normalizer.macro_mean):
        return splits
    raise RunError("the data source no longer matches the run being resumed (different train statistics)")


def run_record(config: RunConfig, trainer: Trainer) -> dict:
    return {
        "config": config.to_dict(),
        "versions": {"asym_tui": VERSION, "torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__,
                     "python": platform.python_version()},
        "device": {"type": trainer.device.type, "reason": trainer.device_reason, "platform": platform.platform()},
        "seed": config.seed,
        "model": {"layers": layer_counts(trainer.model), "parameters": parameter_counts(trainer.model),
                  "shape": dataclasses.asdict(trainer.model.shape)},
        "amp": trainer.learner.amp_note,
        "compiled": trainer.learner.is_compiled,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_summary(config: RunConfig, trainer: Trainer, result: TrainResult, evaluations: dict | None) -> RunSummary:
    last = result.last
    training_rows = [row for row in trainer.history if row["phase"] == "training"]
    utilisation = [row["utilisation"] for row in training_rows if row.get("utilisation") is not None]
    peaks = [row["peak_memory_mb"] for row in trainer.history if row.get("peak_memory_mb") is not None]
    summary = RunSummary(
        status=result.status, stop_reason=result.stop_reason, trainer=config.trainer, preset=config.preset,
        algorithm=config.learning_algorithm, data=config.data, seed=config.seed, device=trainer.device.type,
        fee_model=trading_costs(config),
        device_label=last.device_label,
        metric_conventions={"bar_seconds": trainer.splits.bar_seconds, "periods_per_year": periods_per_year(trainer.splits.bar_seconds),
                            "risk_free_rate": 0.0, "returns": "simple per-bar returns of the equity curve, fees included",
                            "volatility": "sample standard deviation (ddof 1) x sqrt(periods_per_year)",
                            "sortino_downside": "sqrt(mean(min(r, 0)^2)) over all bars"},
        throughput=Throughput(episodes=last.episodes, env_steps=last.env_steps, elapsed_s=last.elapsed_s, train_s=last.train_s,
                              warmup_s=last.warmup_s, duration_s=config.duration_s, episodes_per_min=last.episodes_per_min, steps_per_s=last.steps_per_s,
                              optimizer_steps=last.micro_updates, optimizer_steps_per_s=last.optimizer_steps_per_s,
                              rollout_s=last.rollout_s, update_s=last.update_s),
        training={"loss": last.loss, "mean_episode_return": last.mean_episode_return, "train_sharpe": last.train_sharpe,
                  "portfolio": last.portfolio, "macro_updates": last.macro_updates, "micro_updates": last.micro_updates,
                  "num_envs": last.num_envs, "nan_skips": last.nan_skips, "scaler_skips": last.scaler_skips},
        resources=Resources(utilisation_mean=float(np.mean(utilisation)) if utilisation else None,
                            peak_memory_mb=max(peaks) if peaks else None),
        events=[{"level": m.level, "text": m.text, "elapsed_s": m.elapsed_s} for m in result.messages],
    )
    if evaluations:
        summary.validation, summary.test = ({name: backtest.metrics for name, backtest in evaluations[split].items()}
                                            for split in ("validation", "test"))
        summary.final_portfolio = config.initial_equity * float(evaluations["test"]["agent"].equity[-1])
    return summary


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    atomic_write_text(run_dir / "metrics.csv", pd.DataFrame(history).to_csv(index=False))


def write_equity(path: Path, split, backtests: dict, initial_equity: float) -> None:
    """One row per test bar: close, each policy's equity, and the agent's exposure level."""
    rows = len(split)

    def padded(values: np.ndarray, hold_last: bool) -> np.ndarray:
        # A backtest that ended early (ruin) holds its last equity; the level after the end is flat.
        out = np.zeros(rows)
        count = min(rows, len(values))
        out[:count] = values[:count]
        out[count:] = values[count - 1] if hold_last and count else 0.0
        return out

    # ISO 8601 in UTC, formatted by numpy: pandas formats timestamps one by one (a third of the file's time).
    frame = pd.DataFrame({"timestamp": np.datetime_as_string(split.timestamps, unit="s", timezone="UTC"), "close": split.close})
    for name, backtest in backtests.items():
        frame[f"{name}_equity"] = padded(backtest.equity, hold_last=True) * initial_equity
    frame["agent_level"] = padded(backtests["agent"].levels, hold_last=False).astype(np.int64)
    atomic_write_text(path, frame.to_csv(index=False))


def read_json(path: Path, kind: type = dict):
    """A JSON file of ours, or one clear RunError when it is unreadable, truncated or of the wrong shape."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not readable JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(value, kind):
        raise RunError(f"{path}: expected a JSON {'object' if kind is dict else 'list'}, found {type(value).__name__}")
    return value


def read_summary(run_dir: str | Path) -> RunSummary:
    """A run folder's summary, or one clear RunError."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: no summary.json (not a finished run folder)")
    value = read_json(path)
    if not isinstance(value.get("throughput"), dict):
        raise RunError(f"{path}: not a run summary (no throughput figures)")
    try:
        return RunSummary.from_json(value)
    except (TypeError, ValueError) as exc:
        raise RunError(f"{path}: not a run summary ({exc})") from exc


def list_runs(out_dir: str | Path) -> list[dict]:
    """Run folders under `out_dir` (sweep folders included, one level down), newest first, with their summaries
    (an empty one while a run has none yet)."""
    runs = []
    for config_path in sorted(Path(out_dir).glob("**/config.json")):
        folder = config_path.parent
        try:
            record = json.loads(config_path.read_text())
            summary = RunSummary.from_json(json.loads((folder / "summary.json").read_text())) \
                if (folder / "summary.json").is_file() else RunSummary()
        except (OSError, json.JSONDecodeError, TypeError, ValueError):
            continue
        runs.append({"path": folder, "config": record.get("config", {}), "summary": summary, "created": record.get("created", "")})
    return sorted(runs, key=lambda run: run["created"], reverse=True)


