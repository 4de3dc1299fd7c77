"""The two trainers: REINFORCE with the seed's asymmetric schedule (MacroNet updated 1 : `macro_every`).

Read top to bottom: `discounted_returns` and `sample_actions`, the `ReinforceLearner` (loss, optimizers,
AMP, compile, accumulation, NaN handling), then `Trainer.run` — the loop both trainers share — and the
two ways of collecting episodes: `OriginalTrainer` (one `TradingEnv` episode, batch size 1) and
`OptimizedTrainer` (`num_envs` episodes at once in a `VectorizedTradingEnv`, optionally one CUDA graph).

Rollouts run without autograd; the loss re-evaluates the stored observations in a batched forward.
The network stays in eval mode for both, so the policy that sampled an action is exactly the policy
whose log-probability is differentiated; BatchNorm statistics are refreshed after each optimizer step
(see engine/model.py).

MacroNet and MicroNet see only the bar's features, never the position, and many parallel episodes
visit the same bars. So a rollout stores each step's bar row and position state, not the full
observation, and both the optimized rollout and the loss run MacroNet + MicroNet once per distinct
bar, then gather: the same function and the same gradient (index_select's backward sums over the
episodes that shared a bar), at a fraction of the cost. Only the small decision head runs per step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import RunConfig
from engine.env import TradingEnv, VectorizedTradingEnv, segment_lengths
from engine.evaluation import agent_backtest
from engine.features import MarketSplits
from engine.metrics import episode_sharpe
from engine.model import AsymmetricPolicyNetwork, FoldedPolicy, ModelShape
from engine.monitor import DeviceMonitor, resolve_device

BATCHNORM_SAMPLE = 8192  # observations used to refresh BatchNorm statistics after each update


class TrainingStopped(Exception):
    """Training cannot go on (diverged, out of memory at the smallest batch); the message says what to change."""


@dataclass
class LogMessage:
    """A warning or note for the user (compile fallback, OOM halving, skipped update)."""

    level: str  # "info", "warning" or "error"
    text: str
    elapsed_s: float = 0.0


@dataclass
class Progress:
    """A throttled snapshot of training, emitted a few times a second."""

    trainer: str
    phase: str  # "calibrating", "compiling", "training", "validating", "done"
    elapsed_s: float = 0.0
    train_s: float = 0.0  # seconds spent in rollouts and updates (throughput uses this)
    episodes: int = 0
    env_steps: int = 0
    episodes_per_min: float = 0.0
    steps_per_s: float = 0.0
    loss: float = math.nan
    mean_reward: float = math.nan
    mean_episode_return: float = math.nan  # fraction, over the latest rollout's episodes
    train_sharpe: float = math.nan  # annualized, over recent episodes
    portfolio: float = math.nan  # initial equity x mean final equity of the latest episodes
    macro_updates: int = 0
    micro_updates: int = 0
    num_envs: int = 1
    rollout_s: float = 0.0
    update_s: float = 0.0
    device_label: str = "CPU"
    utilisation: float | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    peak_memory_mb: float | None = None
    val_sharpe: float | None = None
    val_return: float | None = None
    val_drawdown: float | None = None
    val_portfolio: float | None = None
    nan_skips: int = 0
    scaler_skips: int = 0

    def row(self) -> dict:
        return asdict(self)


Event = Progress | LogMessage


class Rollout(NamedTuple):
    """One batch of episodes, step-major: T steps of N episodes."""

    rows: torch.Tensor  # (T, N) long: the bar (row of the train split) each decision was made at
    states: torch.Tensor  # (T, N, 2): exposure level and equity ratio at each decision
    actions: torch.Tensor  # (T, N) long
    rewards: torch.Tensor  # (T, N)
    final_equity: torch.Tensor  # (N,) equity at the end, as a multiple of the start


def discounted_returns(rewards: torch.Tensor, gamma: float, chunk: int = 128) -> torch.Tensor:
    """G_t = r_t + gamma G_{t+1} along dim 0, in O(T): a reverse cumulative sum per chunk of steps
    (powers of gamma stay well inside float32 range) with the next chunk's return carried in."""
    steps = rewards.shape[0]
    returns = torch.empty_like(rewards, dtype=torch.float32)
    carry = torch.zeros_like(rewards[0], dtype=torch.float32)
    for end in range(steps, 0, -chunk):
        start = max(0, end - chunk)
        length = end - start
        shape = (length,) + (1,) * (rewards.dim() - 1)
        powers = gamma ** torch.arange(length, device=rewards.device, dtype=torch.float32).reshape(shape)
        discounted = rewards[start:end].float() * powers
        tail_sums = discounted.flip(0).cumsum(0).flip(0)
        returns[start:end] = tail_sums / powers + carry * (gamma ** (length - torch.arange(length, device=rewards.device, dtype=torch.float32))).reshape(shape)
        carry = returns[start]
    return returns


def sample_actions(logits: torch.Tensor) -> torch.Tensor:
    """Categorical sampling by the Gumbel-max trick: no host sync, capturable in a CUDA graph."""
    noise = torch.rand_like(logits, dtype=torch.float32)
    return (logits.float() - torch.log(-torch.log(noise))).argmax(dim=1)


def amp_settings(config: RunConfig, device: torch.device) -> tuple[torch.dtype | None, bool, str]:
    """(autocast dtype or None, use a gradient scaler, note for the user)."""
    if not config.use_amp:
        return None, False, "AMP off (float32)"
    if config.amp_dtype == "float16" and device.type == "cuda":
        return torch.float16, True, "AMP float16 with a gradient scaler"
    if device.type == "mps":
        return torch.float16, False, "AMP float16 (MPS)"
    if config.amp_dtype == "float16":
        return torch.bfloat16, False, "AMP bfloat16 (float16 needs CUDA)"
    return torch.bfloat16, False, "AMP bfloat16"


class FallbackPolicy:
    """A compiled module while it works; on any failure, eager for the rest of the run (reported once)."""

    def __init__(self, module: torch.nn.Module, backend: str, report: Callable[[str], None], dynamic: bool = False):
        self.module, self.report, self.compiled = module, report, None
        try:
            self.compiled = torch.compile(module, backend=backend, dynamic=dynamic)
        except Exception as exc:
            report(f"torch.compile failed when wrapping the model ({type(exc).__name__}: {exc}); using eager")

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:
                self.compiled = None
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                self.report(f"torch.compile failed ({type(exc).__name__}: {reason[:200]}); eager for the rest of the run")
        return self.module(*args)


class BarEmbedding(torch.nn.Module):
    """The position-independent part of a policy network (MacroNet + MicroNet), as a module to compile."""

    def __init__(self, network: AsymmetricPolicyNetwork):
        super().__init__()
        self.network = network

    def forward(self, features: torch.Tensor, update_macro: bool = True) -> torch.Tensor:
        return self.network.embed(features, update_macro)


class ReinforceLearner:
    """REINFORCE with normalized discounted returns, two Adam optimizers and the asymmetric schedule."""

    def __init__(self, model: AsymmetricPolicyNetwork, config: RunConfig, table: torch.Tensor, report: Callable[[str, str], None]):
        device = table.device
        self.model, self.config, self.device, self.report = model, config, device, report
        self.macro_optimizer = torch.optim.Adam(model.macro_net.parameters(), lr=config.lr_macro)
        self.micro_optimizer = torch.optim.Adam(model.micro_parameters(), lr=config.lr_micro)
        self.amp_dtype, use_scaler, self.amp_note = amp_settings(config, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.table = table  # (rows, features) of the train split, on the device
        # The loss re-evaluates with the network itself; rollouts use the same function with BatchNorm folded in.
        self.folded = FoldedPolicy(model)
        self.embed, self.head = BarEmbedding(model), model.head
        self.rollout_policy, self.rollout_embed, self.rollout_head = self.folded, BarEmbedding(self.folded.folded), self.folded.folded.head
        if config.compile_model:
            reported: set[str] = set()

            def warn(text: str) -> None:  # every compiled part fails the same way: say it once
                if text not in reported:
                    reported.add(text)
                    report("warning", text)
            compiled = lambda module, dynamic=False: FallbackPolicy(module, config.compile_backend, warn, dynamic)
            # The number of distinct bars in a rollout varies: the loss's embedding gets a dynamic batch size.
            self.embed, self.head = compiled(self.embed, dynamic=True), compiled(self.head)
            self.rollout_policy, self.rollout_embed, self.rollout_head = map(compiled, (self.folded, self.rollout_embed, self.rollout_head))
        self.micro_updates = self.macro_updates = 0
        self.nan_skips = self.scaler_skips = self.nan_streak = 0
        self.pending_backwards = 0  # rollouts accumulated since the last optimizer step
        self.update_macro = True
        self.last_loss = torch.zeros((), device=device)

    @property
    def is_compiled(self) -> bool:
        return getattr(self.embed, "is_compiled", False)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def learn(self, rollout: Rollout) -> bool:
        """Backward one rollout; step the optimizers once every `gradient_accumulation_steps` rollouts.
        Advantages are discounted returns normalized over the rollout. True when a step happened."""
        returns = discounted_returns(rollout.rewards, self.config.gamma)
        advantages = (returns - returns.mean()) / (returns.std() + 1e-8)
        rows, states = rollout.rows.reshape(-1), rollout.states.reshape(-1, rollout.states.shape[-1])
        self.accumulate(rows, states, rollout.actions.reshape(-1), advantages.reshape(-1))
        if self.pending_backwards < self.config.gradient_accumulation_steps:
            return False
        self.step(rows, states)
        return True

    def accumulate(self, rows: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor) -> None:
        """Add this batch's policy gradient, weighted 1 / gradient_accumulation_steps, to the .grad buffers.

        MacroNet + MicroNet run once per distinct bar; the head runs per sample in chunks whose
        gradients flow into the shared bar embeddings, which are then back-propagated once."""
        config = self.config
        if self.pending_backwards == 0:
            self.update_macro = self.micro_updates % config.macro_every == 0
        bars, sample_bar = torch.unique(rows, return_inverse=True)
        with self.autocast():
            embedding = self.embed(self.table.index_select(0, bars), self.update_macro)
        shared = embedding.detach().requires_grad_()
        samples = actions.shape[0]
        scale = 1.0 / (samples * config.gradient_accumulation_steps)
        total_loss = torch.zeros((), device=self.device)
        for start in range(0, samples, config.update_minibatch):
            chunk = slice(start, start + config.update_minibatch)
            with self.autocast():
                logits = self.head(torch.cat([shared.index_select(0, sample_bar[chunk]), states[chunk].to(shared.dtype)], dim=1))
            log_probs = F.log_softmax(logits.float(), dim=1)
            chosen = log_probs.gather(1, actions[chunk].unsqueeze(1)).squeeze(1)
            entropy = -(log_probs.exp() * log_probs).sum(1)
            loss = -(chosen * advantages[chunk]).sum() - config.entropy_coef * entropy.sum()
            self.scaler.scale(loss * scale).backward()
            total_loss += loss.detach() / samples
        embedding.backward(shared.grad)  # into MicroNet (and MacroNet on its updates), once per bar
        self.last_loss = total_loss
        self.pending_backwards += 1

    def step(self, rows: torch.Tensor, states: torch.Tensor) -> None:
        """Clip, step the optimizers the schedule allows, count, refresh BatchNorm statistics."""
        optimizers = [self.micro_optimizer] + ([self.macro_optimizer] if self.update_macro else [])
        parameters = self.model.micro_parameters() + (list(self.model.macro_net.parameters()) if self.update_macro else [])
        for optimizer in optimizers:
            self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
        finite = bool(torch.isfinite(norm))  # one sync per update, never per step
        if finite or self.scaler.is_enabled():
            scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            for optimizer in optimizers:
                self.scaler.step(optimizer)
            self.scaler.update()
            if self.scaler.is_enabled() and self.scaler.get_scale() < scale_before:
                self.scaler_skips += 1  # the scaler found inf/NaN gradients and skipped this step
        self.macro_optimizer.zero_grad(set_to_none=True)
        self.micro_optimizer.zero_grad(set_to_none=True)
        self.pending_backwards = 0
        if not finite and not self.scaler.is_enabled():
            self._skip_non_finite()
            return
        self.nan_streak = 0
        self.micro_updates += 1
        self.macro_updates += int(self.update_macro)
        sample = torch.randperm(rows.shape[0], device=rows.device)[:BATCHNORM_SAMPLE]
        observations = torch.cat([self.table.index_select(0, rows[sample]), states[sample].float()], dim=1)
        self.model.refresh_batchnorm(observations)

    def _skip_non_finite(self) -> None:
        self.nan_skips += 1
        self.nan_streak += 1
        self.report("warning", f"non-finite loss or gradients: update skipped ({self.nan_skips} so far)")
        limit = self.config.max_nan_updates
        if limit and self.nan_streak >= limit:
            hint = "lower lr_micro / lr_macro" + (" or turn AMP off" if self.config.use_amp else "")
            raise TrainingStopped(f"training diverged: {self.nan_streak} non-finite updates in a row; {hint}")

    def state_dict(self) -> dict:
        return {
            "macro_optimizer": self.macro_optimizer.state_dict(), "micro_optimizer": self.micro_optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "micro_updates": self.micro_updates, "macro_updates": self.macro_updates,
            "nan_skips": self.nan_skips, "scaler_skips": self.scaler_skips,
        }

    def load_state_dict(self, state: dict) -> None:
        self.macro_optimizer.load_state_dict(state["macro_optimizer"])
        self.micro_optimizer.load_state_dict(state["micro_optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        for key in ("micro_updates", "macro_updates", "nan_skips", "scaler_skips"):
            setattr(self, key, state[key])


@dataclass
class TrainResult:
    status: str  # "completed", "stopped", "failed"
    stop_reason: str
    last: Progress
    history: list[dict] = field(default_factory=list)
    messages: list[LogMessage] = field(default_factory=list)


class Trainer:
    """The loop both trainers share: collect episodes, learn, report, validate, stop."""

    name = "trainer"

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
        self.session_episodes = self.session_steps = 0
        train = splits.train
        table = torch.as_tensor(np.concatenate([train.macro, train.micro], axis=1), dtype=torch.float32, device=self.device)
        self.learner = ReinforceLearner(self.model, config, table, self.log)
        self.monitor = DeviceMonitor(self.device)
        self.env_config = config.env_config()
        self.num_envs = 1
        self.recent_log_returns: deque[float] = deque(maxlen=256)
        self.history: list[dict] = []
        self.validation: dict | None = None
        self.best: dict | None = None  # weights with the best validation Sharpe so far
        self.last_progress = Progress(self.name, "starting")
        self.calibrate_batchnorm()

    # --- reporting ---------------------------------------------------------------------------------
    def log(self, level: str, text: str) -> None:
        message = LogMessage(level, text, self.elapsed_before + self.session_elapsed)
        self.messages.append(message)
        self.on_event(message)

    def progress(self, phase: str, started: float, loss=math.nan, mean_reward=math.nan, mean_return=math.nan, portfolio=math.nan) -> Progress:
        train_s = self.rollout_s + self.update_s
        reading = self.monitor.read()
        validation = self.validation or {}
        event = Progress(
            trainer=self.name, phase=phase, elapsed_s=self.elapsed_before + time.perf_counter() - started,
            train_s=self.train_s_before + train_s, episodes=self.episodes, env_steps=self.env_steps,
            episodes_per_min=60 * self.session_episodes / train_s if train_s else 0.0,
            steps_per_s=self.session_steps / train_s if train_s else 0.0,
            loss=loss, mean_reward=mean_reward, mean_episode_return=mean_return,
            train_sharpe=episode_sharpe(np.asarray(self.recent_log_returns), self.episode_length, self.splits.bar_seconds),
            portfolio=portfolio, macro_updates=self.learner.macro_updates, micro_updates=self.learner.micro_updates,
            num_envs=self.num_envs, rollout_s=self.rollout_s, update_s=self.update_s,
            device_label=reading.label, utilisation=reading.utilisation, memory_used_mb=reading.memory_used_mb,
            memory_total_mb=reading.memory_total_mb, peak_memory_mb=reading.peak_allocated_mb,
            val_sharpe=validation.get("sharpe"), val_return=validation.get("total_return"),
            val_drawdown=validation.get("max_drawdown"), val_portfolio=validation.get("portfolio"),
            nan_skips=self.learner.nan_skips, scaler_skips=self.learner.scaler_skips,
        )
        self.last_progress = event
        self.history.append(event.row())
        self.on_event(event)
        return event

    # --- the loop ----------------------------------------------------------------------------------
    def run(self, checkpoint: Callable[[], None] | None = None) -> TrainResult:
        config = self.config
        started = time.perf_counter()
        self.session_elapsed = 0.0
        compiled = self.learner.is_compiled
        self.progress("compiling" if compiled else "training", started)
        last_report = last_eval = time.perf_counter()
        status, reason = "completed", ""
        while not (reason := self.stop_reason(started)):
            try:
                t0 = time.perf_counter()
                rollout = self.collect()
                t1 = time.perf_counter()
                self.learner.learn(rollout)
                t2 = time.perf_counter()
            except (RuntimeError, TrainingStopped) as exc:  # torch.OutOfMemoryError is a RuntimeError
                failure = self.recover(exc)
                if failure:
                    status, reason = "failed", failure
                    break
                continue
            self.rollout_s += t1 - t0
            self.update_s += t2 - t1
            steps, batch = rollout.actions.shape
            self.episodes += batch
            self.session_episodes += batch
            self.env_steps += batch * steps
            self.session_steps += batch * steps
            log_returns = rollout.final_equity.double().clamp(min=1e-12).log().cpu().numpy()
            self.recent_log_returns.extend(log_returns.tolist())
            now = time.perf_counter()
            self.session_elapsed = now - started
            if config.eval_every_s and now - last_eval >= config.eval_every_s:
                self.validate(started)
                if checkpoint:
                    checkpoint()
                last_eval = now = time.perf_counter()
            if now - last_report >= config.progress_every_s:
                self.report_rollout(rollout, started)
                last_report = now
        if self.last_progress.episodes != self.episodes:  # the summary's figures come from the last event
            self.report_rollout(rollout, started)
        self.elapsed_before += time.perf_counter() - started
        self.train_s_before += self.rollout_s + self.update_s
        if status == "completed" and reason == "stopped by the user":
            status = "stopped"
        return TrainResult(status, reason, self.last_progress, self.history, self.messages)

    def report_rollout(self, rollout: Rollout, started: float) -> None:
        equity = rollout.final_equity.double()
        self.progress("training", started, float(self.learner.last_loss), float(rollout.rewards.float().mean()),
                      float(equity.mean() - 1), self.config.initial_equity * float(equity.mean()))

    def stop_reason(self, started: float) -> str:
        if self.stop.is_set():
            return "stopped by the user"
        if self.config.duration_s and time.perf_counter() - started >= self.config.duration_s:
            return f"duration of {self.config.duration_s:g} s reached"
        if self.config.max_episodes and self.episodes >= self.config.max_episodes:
            return f"episode budget of {self.config.max_episodes} reached"
        return ""

    def validate(self, started: float) -> dict:
        """Greedy backtest on the validation split; remembers the weights with the best Sharpe so far."""
        self.progress("validating", started)
        backtest = agent_backtest(self.model, self.splits.validation, self.env_config, self.splits.bar_seconds)
        self.validation = {**backtest.metrics, "portfolio": self.config.initial_equity * float(backtest.equity[-1])}
        if self.best is None or self.validation["sharpe"] > self.best["val_sharpe"]:
            weights = {name: value.detach().cpu().clone() for name, value in self.model.state_dict().items()}
            self.best = {"episodes": self.episodes, "val_sharpe": self.validation["sharpe"], "model": weights}
        return self.validation

    def selected_model(self) -> tuple[AsymmetricPolicyNetwork, dict]:
        """The network to evaluate on test: the best-validation weights (`select_best`), else the last ones."""
        if not (self.config.select_best and self.best):
            return self.model, {"weights": "last", "episodes": self.episodes}
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.best["model"])
        return model, {"weights": "best validation Sharpe", "episodes": self.best["episodes"], "val_sharpe": self.best["val_sharpe"]}

    def calibrate_batchnorm(self) -> None:
        """Initial BatchNorm statistics from training observations (flat, start equity) — before any rollout."""
        train = self.splits.train
        rows = np.random.default_rng(self.config.seed).choice(len(train), size=min(len(train), BATCHNORM_SAMPLE), replace=False)
        table = np.concatenate([train.macro[rows], train.micro[rows], np.zeros((len(rows), 1)), np.ones((len(rows), 1))], axis=1)
        self.model.refresh_batchnorm(torch.as_tensor(table, dtype=torch.float32, device=self.device), cumulative=True)

    def recover(self, exc: Exception) -> str:
        """Survive an out-of-memory error if possible; return why training must stop, or ''."""
        if not (isinstance(exc, TrainingStopped) or is_out_of_memory(exc)):
            raise exc
        try:
            if not isinstance(exc, TrainingStopped):
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
            "counters": {"episodes": self.episodes, "env_steps": self.env_steps, "elapsed_s": self.elapsed_before,
                         "train_s": self.train_s_before, "num_envs": self.num_envs},
            "recent_log_returns": list(self.recent_log_returns), "rng": rng_state(), "history": self.history,
            "best": self.best,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.learner.load_state_dict(state["learner"])
        counters = state["counters"]
        self.episodes, self.env_steps = counters["episodes"], counters["env_steps"]
        self.elapsed_before, self.train_s_before = counters["elapsed_s"], counters["train_s"]
        self.recent_log_returns.extend(state["recent_log_returns"])
        self.history = list(state.get("history", []))
        self.best = state.get("best")
        set_rng_state(state["rng"])

    @property
    def episode_length(self) -> int:
        raise NotImplementedError

    def collect(self) -> Rollout:
        """Run one batch of episodes without autograd."""
        raise NotImplementedError


class OriginalTrainer(Trainer):
    """The baseline: one `TradingEnv` episode at a time, one observation per forward pass."""

    name = "original"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.env = TradingEnv(self.splits.train, self.env_config)
        self.env.reset(seed=self.config.seed)

    @property
    def episode_length(self) -> int:
        return min(self.config.episode_steps, min(segment_lengths(self.splits.train)) - 1)

    @torch.no_grad()
    def collect(self) -> Rollout:
        self.learner.folded.sync()
        env, policy = self.env, self.learner.rollout_policy
        observation, _ = env.reset()
        rows, states, actions, rewards = [], [], [], []
        done = False
        with self.learner.autocast():
            while not done:
                logits = policy(torch.as_tensor(observation, device=self.device).unsqueeze(0))
                action = int(sample_actions(logits))
                rows.append(env.row)
                states.append(observation[-2:])
                next_observation, reward, terminated, truncated, _ = env.step(action)
                actions.append(action)
                rewards.append(reward)
                observation, done = next_observation, terminated or truncated
        as_batch = lambda values, dtype: torch.as_tensor(np.asarray(values), dtype=dtype, device=self.device).unsqueeze(1)
        return Rollout(as_batch(rows, torch.long), as_batch(states, torch.float32), as_batch(actions, torch.long),
                       as_batch(rewards, torch.float32), torch.tensor([env.equity], dtype=torch.float64))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "env_rng": self.env.np_random.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.env.np_random.bit_generator.state = state["env_rng"]


class OptimizedTrainer(Trainer):
    """`num_envs` episodes at once, all on the device; buffers preallocated; optional CUDA graph."""

    name = "optimized"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.use_cuda_graph = self.config.cuda_graphs and self.device.type == "cuda"
        if self.config.cuda_graphs and not self.use_cuda_graph:
            self.log("info", "CUDA graphs need a CUDA device; running the rollout without them")
        self.build(self.config.num_envs)

    @property
    def episode_length(self) -> int:
        return self.env.episode_length

    def build(self, num_envs: int) -> None:
        """(Re)create the environments and rollout buffers for `num_envs` episodes."""
        self.num_envs = num_envs
        self.env = VectorizedTradingEnv(self.splits.train, num_envs, self.env_config, self.device)
        steps = self.env.episode_length
        self.rows = torch.empty(steps, num_envs, dtype=torch.long, device=self.device)
        self.states = torch.empty(steps, num_envs, 2, device=self.device)
        self.actions = torch.empty(steps, num_envs, dtype=torch.long, device=self.device)
        self.rewards = torch.empty(steps, num_envs, device=self.device)
        self.graph = None

    @torch.no_grad()
    def rollout(self) -> torch.Tensor:
        """Fill the buffers with one batch of episodes; returns the final equity (N,). No host syncs.
        Every train bar is embedded once; each step gathers its bars' embeddings and runs the head."""
        env, learner = self.env, self.learner
        with learner.autocast():
            embedding = learner.rollout_embed(learner.table)
            env.reset()
            for step in range(env.episode_length):
                rows = env.rows()
                state = torch.stack([env.level, env.equity], dim=1)
                logits = learner.rollout_head(torch.cat([embedding.index_select(0, rows), state.to(embedding.dtype)], dim=1))
                actions = sample_actions(logits)
                self.rows[step].copy_(rows)
                self.states[step].copy_(state)
                self.actions[step].copy_(actions)
                self.rewards[step].copy_(env.advance(actions))
        return env.equity

    def collect(self) -> Rollout:
        self.learner.folded.sync()  # in place, outside any CUDA graph: the graph reads these weights
        final_equity = self.graph_rollout() if self.use_cuda_graph else self.rollout()
        return Rollout(self.rows, self.states, self.actions, self.rewards, final_equity)

    def graph_rollout(self) -> torch.Tensor:
        """Capture the whole rollout (reset + every step) once as a CUDA graph, then replay it."""
        if self.graph is None:
            try:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):  # warm-up (and compilation) outside the capture
                        self.rollout()
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.graph_equity = self.rollout()
                self.graph = graph
                self.log("info", f"rollout captured as one CUDA graph ({self.env.episode_length} steps x {self.num_envs} episodes)")
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:
                self.use_cuda_graph = False
                self.log("warning", f"CUDA graph capture failed ({type(exc).__name__}: {str(exc)[:200]}); rollout without graphs")
                return self.rollout()
        self.graph.replay()
        return self.graph_equity

    def handle_out_of_memory(self) -> None:
        """Halve num_envs (down to min_num_envs), record it, and go on."""
        smaller = self.num_envs // 2
        self.learner.macro_optimizer.zero_grad(set_to_none=True)
        self.learner.micro_optimizer.zero_grad(set_to_none=True)
        self.learner.pending_backwards = 0
        self.rows = self.states = self.actions = self.rewards = self.graph = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if smaller < self.config.min_num_envs:
            raise TrainingStopped(f"out of memory even at num_envs={self.num_envs} (the floor is {self.config.min_num_envs}); "
                                  "use a smaller model load, a smaller update_minibatch, or another device")
        self.log("warning", f"out of memory: num_envs halved from {self.num_envs} to {smaller}")
        self.build(smaller)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state["counters"]["num_envs"] != self.num_envs:
            self.build(state["counters"]["num_envs"])


def make_trainer(config: RunConfig, splits: MarketSplits, on_event=None, stop=None) -> Trainer:
    trainer_class = {"original": OriginalTrainer, "optimized": OptimizedTrainer}[config.trainer]
    return trainer_class(config, splits, on_event=on_event, stop=stop)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; MPS raises a RuntimeError that says so."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
