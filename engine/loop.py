"""The training loop both trainers share.

`Trainer` has one public `iterate()` — collect a batch of experience, learn from it; `bench` times exactly
this — and `run()` loops over it with reporting (Progress events), out-of-memory recovery and stopping.
Its other parts live beside it, by what changes together: warm-up, rates and budgets in engine/clock.py
(`Timing`; the duration and the user are heard inside an iteration too, see `Deadline`), validation and
the weights a run keeps in engine/selection.py (`Selecting`). How experience is collected is the
subclasses' part (engine/trainers.py); learning itself (losses, optimizers, AMP, accumulation) is
engine/learners.py.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.config import RunConfig
from engine.events import Event, LogMessage, Progress
from engine.features import MarketSplits
from engine.metrics import episode_sharpe
from engine.learners import Interrupted, PPOBatch, Rollout, TrainingStopped, make_learner
from engine.model import AsymmetricPolicyNetwork, ModelShape
from engine.monitor import DeviceMonitor, resolve_device
from engine.clock import COMPILED_WARMUP_ITERATIONS, WARMUP_ITERATIONS, Deadline, Iteration, Timing, Warmup
from engine.selection import Selecting, Selection, ValidationSet

@dataclass
class TrainResult:
    status: str  # "completed", "stopped", "failed"
    stop_reason: str
    last: Progress
    history: list[dict] = field(default_factory=list)
    messages: list[LogMessage] = field(default_factory=list)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Trainer(Timing, Selecting):
    """The loop both trainers share: iterate (collect, learn), report, validate, stop."""

    name = "trainer"
    bars_per_action = 1  # bars the environments step per stored decision (PPO's action_repeat)

    def __init__(self, config: RunConfig, splits: MarketSplits, on_event: Callable[[Event], None] | None = None,
                 stop: threading.Event | None = None):
        self.config, self.splits = config, splits
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or threading.Event()
        self.device, self.device_reason = resolve_device(config.device)
        seed_everything(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        shape = ModelShape(macro_dim=splits.train.macro.shape[1], micro_dim=splits.train.micro.shape[1])
        self.model = AsymmetricPolicyNetwork(shape).to(self.device).eval()
        self.messages: list[LogMessage] = []
        self.episodes = self.env_steps = 0
        self.rollout_s = self.update_s = self.train_s_before = self.elapsed_before = self.session_elapsed = 0.0
        self.warmup = Warmup()
        self.session_episodes = self.session_steps = self.session_updates = 0
        train = splits.train
        table = torch.as_tensor(np.concatenate([train.macro, train.micro], axis=1), dtype=torch.float32, device=self.device)
        self.algorithm = config.learning_algorithm
        self.learner = make_learner(self.algorithm, self.model, config, table, self.log)
        self.monitor = DeviceMonitor(self.device)
        self.env_config = config.env_config()
        self.num_envs = 1
        self.recent_log_returns: deque[float] = deque(maxlen=256)
        self.history: list[dict] = []
        self.validation: dict | None = None
        self.validation_set = ValidationSet.from_splits(splits, self.env_config)
        self.selection = Selection()
        self.validations: list[dict] = []  # every validation: when, after how much training, what score
        self.last_progress = Progress(self.name, "starting", algorithm=self.algorithm)
        self.learner.calibrate_batchnorm(config.seed)

    # --- reporting ---------------------------------------------------------------------------------
    def log(self, level: str, text: str) -> None:
        message = LogMessage(level, text, self.elapsed_before + self.session_elapsed)
        self.messages.append(message)
        self.on_event(message)

    def progress(self, phase: str, started: float, loss=math.nan, mean_reward=math.nan) -> Progress:
        reading = self.monitor.read()
        validation = self.validation or {}
        recent = np.asarray(self.recent_log_returns)
        episodes_per_min, steps_per_s, updates_per_s = self.rates()
        event = Progress(
            trainer=self.name, phase=phase, elapsed_s=self.elapsed_before + time.perf_counter() - started,
            train_s=self.train_s, warmup_s=self.warmup.total_s, duration_s=self.config.duration_s or 0.0,
            max_episodes=self.config.max_episodes or 0, total_steps=self.config.total_steps, episodes=self.episodes, env_steps=self.env_steps,
            episodes_per_min=episodes_per_min, steps_per_s=steps_per_s,
            loss=loss, mean_reward=mean_reward,
            mean_episode_return=float(np.expm1(recent[-64:]).mean()) if len(recent) else math.nan,
            train_sharpe=episode_sharpe(recent, self.episode_length, self.splits.bar_seconds),
            portfolio=self.config.initial_equity * float(np.exp(recent[-64:]).mean()) if len(recent) else math.nan,
            macro_updates=self.learner.macro_updates, micro_updates=self.learner.micro_updates,
            optimizer_steps_per_s=updates_per_s, algorithm=self.algorithm,
            num_envs=self.num_envs, rollout_s=self.rollout_s, update_s=self.update_s,
            device_label=reading.label, utilisation=reading.utilisation, memory_used_mb=reading.memory_used_mb,
            memory_total_mb=reading.memory_total_mb, peak_memory_mb=reading.peak_allocated_mb,
            process_cpu=reading.process_cpu, process_rss_mb=reading.process_rss_mb,
            val_sharpe=validation.get("sharpe"), val_score=validation.get("score"), val_return=validation.get("total_return"),
            val_drawdown=validation.get("max_drawdown"), val_portfolio=validation.get("portfolio"),
            nan_skips=self.learner.nan_skips, scaler_skips=self.learner.scaler_skips, **self.learner.diagnostics(),
        )
        self.last_progress = event
        self.history.append(event.row())
        self.on_event(event)
        return event

    # --- the loop ----------------------------------------------------------------------------------
    def iterate(self) -> Iteration:
        """Collect one batch of experience and learn from it (the unit `bench` times)."""
        started = time.perf_counter()
        batch, finished = self.collect()
        synchronize(self.device)
        collected = time.perf_counter()
        self.learner.learn(batch)
        rewards = batch.rewards.float().mean()
        loss, finished = float(self.learner.last_loss), finished.double().cpu().numpy()  # the one sync per iteration
        return Iteration(batch.actions.numel() * self.bars_per_action, finished, collected - started, time.perf_counter() - collected,
                         float(rewards), loss)

    def run(self, checkpoint: Callable[[], None] | None = None) -> TrainResult:
        config = self.config
        started = time.perf_counter()
        self.session_elapsed = 0.0
        self.warmup.begin(COMPILED_WARMUP_ITERATIONS if self.learner.is_compiled or config.cuda_graphs else WARMUP_ITERATIONS)
        self.progress("compiling" if self.learner.is_compiled else "warming up", started)
        self.learner.interrupted = Deadline(self, started)
        last_report = last_eval = time.perf_counter()
        status, reason, step = "completed", "", None
        while not (reason := self.stop_reason(started)):
            updates_before = self.learner.micro_updates
            if config.anneal_lr:
                self.learner.anneal(self.remaining(started))
            try:
                step = self.iterate()
            except Interrupted:  # the partial batch is dropped
                reason = self.stop_reason(started)
                break
            except (RuntimeError, TrainingStopped) as exc:  # torch.OutOfMemoryError is a RuntimeError
                failure = self.recover(exc)
                if failure:
                    status, reason = "failed", failure
                    break
                continue
            warming = self.warmup.pending
            self.record(step, self.learner.micro_updates - updates_before)
            now = time.perf_counter()
            self.session_elapsed = now - started
            if warming and not self.warmup.pending:
                self.warmed_up(started)
                last_report = now
            if config.eval_every_s and now - last_eval >= config.eval_every_s:
                self.validate(started)
                if checkpoint:
                    checkpoint()
                last_eval = now = time.perf_counter()
            if now - last_report >= config.progress_every_s:
                self.progress("training", started, step.loss, step.mean_reward)
                last_report = now
        # The summary's figures come from the last event: it holds the whole time, even when warm-up was all there was.
        phase = ("compiling" if self.learner.is_compiled else "warming up") if self.warmup.pending else "training"
        self.progress(phase, started, *((step.loss, step.mean_reward) if step else ()))
        self.elapsed_before += time.perf_counter() - started
        self.session_elapsed = 0.0
        self.learner.interrupted = lambda: False
        if status == "completed" and reason == "stopped by the user":
            status = "stopped"
        return TrainResult(status, reason, self.last_progress, self.history, self.messages)

    def recover(self, exc: Exception) -> str:
        """Survive an out-of-memory error if possible; return why training must stop, or ''."""
        if not (isinstance(exc, TrainingStopped) or is_out_of_memory(exc)):
            raise exc
        try:
            if not isinstance(exc, TrainingStopped):
                self.learner.zero_grad()
                self.handle_out_of_memory()
                return ""
            raise exc
        except TrainingStopped as stopped:
            self.log("error", str(stopped))
            return str(stopped)

    def handle_out_of_memory(self) -> None:
        raise TrainingStopped("out of memory with one episode at a time; free device memory or use a smaller device load")

    # --- state for checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "learner": self.learner.state_dict(),
            "counters": {"episodes": self.episodes, "env_steps": self.env_steps, "elapsed_s": self.elapsed_before + self.session_elapsed,
                         "train_s": self.train_s, "warmup_s": self.warmup.total_s, "num_envs": self.num_envs},
            "recent_log_returns": list(self.recent_log_returns), "rng": rng_state(), "history": self.history,
            "best": self.best, "selection": self.selection.state_dict(), "validations": self.validations,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.learner.load_state_dict(state["learner"])
        counters = state["counters"]
        self.episodes, self.env_steps = counters["episodes"], counters["env_steps"]
        self.elapsed_before, self.train_s_before = counters["elapsed_s"], counters["train_s"]
        self.warmup.before_s = counters.get("warmup_s", 0.0)
        self.recent_log_returns.extend(state["recent_log_returns"])
        self.history = list(state.get("history", []))
        self.selection.load_state_dict(state.get("selection"), state.get("best"))
        self.validations = list(state.get("validations", []))
        set_rng_state(state["rng"])

    @property
    def episode_length(self) -> int:
        raise NotImplementedError

    def collect(self) -> tuple[Rollout | PPOBatch, torch.Tensor]:
        """One batch of experience without autograd, and the log growth of the episodes that ended in it."""
        raise NotImplementedError


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; MPS raises a RuntimeError that says so."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


def rng_state() -> dict:
    """Every random generator's state as tensors and plain values (checkpoints load with weights_only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
