"""Time and counts of a run, what the loop asks about them: warm-up timed apart from throughput, this
session's rates, the budgets (duration, episodes, env-steps) and the deadline heard inside an iteration.

`Timing` is the part of `engine.loop.Trainer` that keeps the clock; it reads the trainer's counters
(episodes, env-steps, rollout and update seconds) and its config.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

WARMUP_ITERATIONS = 1  # first iterations of a session timed apart: lazy allocation; compilation and graph
COMPILED_WARMUP_ITERATIONS = 2  # capture take both MacroNet modes, so two when compiling
HEARTBEAT_S = 1.0  # while a long first iteration warms up, a progress event this often shows the clock running


@dataclass
class Warmup:
    """The first iterations of a session, timed apart from throughput (compilation, graph capture)."""

    pending: int = 0  # iterations still to go
    seconds: float = 0.0  # this session's
    before_s: float = 0.0  # earlier sessions' (a resumed run)
    episodes: int = 0
    steps: int = 0
    updates: int = 0

    def begin(self, iterations: int) -> None:
        self.before_s, self.seconds = self.total_s, 0.0
        self.pending, self.episodes, self.steps, self.updates = iterations, 0, 0, 0

    def add(self, step: Iteration, episodes: int, updates: int) -> None:
        self.pending -= 1
        self.seconds += step.rollout_s + step.update_s
        self.episodes += episodes
        self.steps += step.env_steps
        self.updates += updates

    @property
    def total_s(self) -> float:
        return self.before_s + self.seconds


class Deadline:
    """"Must the run end now?", asked inside rollouts and between PPO minibatch steps so that the duration
    holds within an iteration. Warm-up counts in the duration; while it lasts, the last progress event is
    sent again (not recorded) with the time going by."""

    def __init__(self, trainer, started: float):  # an engine.loop.Trainer
        self.trainer, self.started, self.heartbeat = trainer, started, started

    def __call__(self) -> bool:
        trainer, now = self.trainer, time.perf_counter()
        if trainer.warmup.pending and now - self.heartbeat >= HEARTBEAT_S:
            trainer.on_event(replace(trainer.last_progress, elapsed_s=trainer.elapsed_before + now - self.started))
            self.heartbeat = now
        duration = trainer.config.duration_s
        return trainer.stop.is_set() or bool(duration) and now - self.started >= duration


class Iteration(NamedTuple):
    """What one `Trainer.iterate()` did."""

    env_steps: int
    finished_log_returns: np.ndarray  # log equity growth of each episode that ended
    rollout_s: float
    update_s: float
    mean_reward: float
    loss: float


class Timing:
    """Warm-up and timing: what `Trainer.run()` records after each iteration and asks before the next."""

    @property
    def train_s(self) -> float:
        """Seconds of rollouts and updates after warm-up, over every session of the run."""
        return self.train_s_before + self.rollout_s + self.update_s

    def rates(self) -> tuple[float, float, float]:
        """This session's episodes/min, env-steps/s and optimizer steps/s after warm-up (warm-up alone if
        the session never got past it)."""
        seconds, episodes, steps, updates = self.rollout_s + self.update_s, self.session_episodes, self.session_steps, self.session_updates
        if not seconds:
            seconds, episodes, steps, updates = self.warmup.seconds, self.warmup.episodes, self.warmup.steps, self.warmup.updates
        return (60 * episodes / seconds, steps / seconds, updates / seconds) if seconds else (0.0, 0.0, 0.0)

    def record(self, step: Iteration, updates: int) -> None:
        finished = len(step.finished_log_returns)
        self.episodes += finished
        self.env_steps += step.env_steps
        self.recent_log_returns.extend(step.finished_log_returns.tolist())
        if self.warmup.pending:
            self.warmup.add(step, finished, updates)
            return
        self.rollout_s += step.rollout_s
        self.update_s += step.update_s
        self.session_episodes += finished
        self.session_steps += step.env_steps
        self.session_updates += updates

    def warmed_up(self, started: float) -> None:
        """Say how long warm-up took (compilation, graph capture) and report training right away."""
        if self.learner.is_compiled or self.config.cuda_graphs:
            self.log("info", f"warm-up took {self.warmup.seconds:.1f} s (compilation, graph capture); "
                             "throughput is measured after it")
        self.progress("training", started)

    def remaining(self, started: float) -> float:
        """The fraction left of the budget that ends first (duration, episodes, env-steps); 1 without one."""
        config = self.config
        spent = [(time.perf_counter() - started) / config.duration_s if config.duration_s else 0.0,
                 self.episodes / config.max_episodes if config.max_episodes else 0.0,
                 self.env_steps / config.total_steps if config.total_steps else 0.0]
        return max(0.0, 1.0 - max(spent))

    def stop_reason(self, started: float) -> str:
        if self.stop.is_set():
            return "stopped by the user"
        if self.config.duration_s and time.perf_counter() - started >= self.config.duration_s:
            return f"duration of {self.config.duration_s:g} s reached"
        if self.config.max_episodes and self.episodes >= self.config.max_episodes:
            return f"episode budget of {self.config.max_episodes} reached"
        if self.config.total_steps and self.env_steps >= self.config.total_steps:
            return f"env-step budget of {self.config.total_steps:,} reached"
        return ""

