"""Learners: what turns collected experience into optimizer steps.

Read top to bottom: the batches a trainer collects (`Rollout` for REINFORCE, `PPOBatch` for PPO),
returns and GAE (reverse scans, O(T)), sampling, AMP and compile helpers, then `Learner` — the part
both algorithms share: two Adam optimizers (MacroNet at `lr_macro`; MicroNet, head and value head at
`lr_micro`), the asymmetric schedule (MacroNet stepped once per `macro_every` updates; on the others
its backward never runs), gradient clipping, AMP with an optional gradient scaler, torch.compile with
a reported fallback to eager, non-finite update skipping — and last the two algorithms:

- `ReinforceLearner`: the seed's algorithm (normalized discounted returns, one step per
  `gradient_accumulation_steps` batches of whole episodes). The original trainer always uses it.
- `PPOLearner`: GAE (lambda, gamma) with the value bootstrapped where a rollout or a time limit cuts an
  episode, clipped surrogate, value loss, entropy bonus, `ppo_epochs` x `ppo_minibatches` steps per
  rollout, advantages normalized per minibatch. Many cheap updates, not one huge one.

Each learn() leaves diagnostics on the device (PPO: approximate KL, clip fraction, entropy, policy and value
loss, explained variance), read once per iteration; `diagnostic_hints` says when they leave the usual ranges.

The network stays in eval mode for sampling and for the loss, so the policy that acted is the policy
whose log-probabilities are differentiated; BatchNorm statistics are refreshed from the experience
just used, once per rollout (see engine/model.py). MacroNet and MicroNet never see the position, so
they run once per distinct bar of a (mini)batch and the results are gathered: only the head runs per
sample — the same function and gradient, at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import RunConfig
from engine.precision import amp_settings
from engine.model import AsymmetricPolicyNetwork, FoldedPolicy

BATCHNORM_SAMPLE = 8192  # observations behind BatchNorm statistics: the initial calibration and each refresh


class TrainingStopped(Exception):
    """Training cannot go on (diverged, out of memory at the smallest batch); the message says what to change."""


class Interrupted(Exception):
    """The run must end now (duration up, or stopped) in the middle of a rollout: the partial batch is dropped."""


class Rollout(NamedTuple):
    """REINFORCE: one batch of whole episodes, step-major: T steps of N episodes."""

    rows: torch.Tensor  # (T, N) long: the bar (row of the train split) each decision was made at
    states: torch.Tensor  # (T, N, 2): exposure level and equity entry at each decision
    actions: torch.Tensor  # (T, N) long
    rewards: torch.Tensor  # (T, N)
    final_equity: torch.Tensor  # (N,) equity at the end, as a multiple of the start


class PPOBatch(NamedTuple):
    """PPO: T steps of N persistent episodes; an episode may end (and restart) anywhere inside."""

    rows: torch.Tensor  # (T, N) long
    states: torch.Tensor  # (T, N, 2)
    actions: torch.Tensor  # (T, N) long
    log_probs: torch.Tensor  # (T, N) log-probability of the action under the policy that acted
    values: torch.Tensor  # (T, N) value estimate at each decision
    rewards: torch.Tensor  # (T, N), plus gamma x value of the next state where a time limit cut the episode
    dones: torch.Tensor  # (T, N) float: 1 where the episode ended after this step
    last_value: torch.Tensor  # (N,) value of the state after the last step (the rollout's bootstrap)


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


def generalized_advantages(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
                           gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) by a reverse scan over T steps of N episodes: (advantages, value targets).

    `dones[t]` = 1 cuts the recursion after step t (the next state belongs to a new episode); a time
    limit's bootstrap is already inside `rewards[t]`, and the rollout's end bootstraps `last_value`."""
    advantages = torch.empty_like(values, dtype=torch.float32)
    running = torch.zeros_like(last_value, dtype=torch.float32)
    next_value = last_value.float()
    for t in reversed(range(rewards.shape[0])):
        carry = 1.0 - dones[t].float()
        delta = rewards[t].float() + gamma * next_value * carry - values[t].float()
        running = delta + gamma * lam * carry * running
        advantages[t] = running
        next_value = values[t].float()
    return advantages, advantages + values.float()


def clipped_surrogate(new_log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's per-sample policy loss: the pessimistic one of the plain and the clipped ratio objective."""
    ratio = (new_log_probs - old_log_probs).exp()
    return torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))


def sample_actions(logits: torch.Tensor) -> torch.Tensor:
    """Categorical sampling by the Gumbel-max trick: no host sync, capturable in a CUDA graph."""
    noise = torch.rand_like(logits, dtype=torch.float32)
    return (logits.float() - torch.log(-torch.log(noise))).argmax(dim=1)


class FallbackPolicy:
    """A compiled module while it works; on any failure, eager for the rest of the run (reported once)."""

    def __init__(self, module: torch.nn.Module, backend: str, report: Callable[[str], None], dynamic: bool = False):
        self.module, self.report, self.compiled = module, report, None
        try:
            self.compiled = torch.compile(module, backend=backend, dynamic=dynamic)
        except Exception as exc:
            report(f"torch.compile failed when wrapping the model ({type(exc).__name__}: {exc}); using eager")

    def __call__(self, *args):
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


class Learner:
    """Optimizers, schedule, AMP, compile, clipping and bookkeeping shared by both algorithms."""

    algorithm = "learner"
    step_diagnostics: tuple[str, ...] = ()  # averaged over the backward passes of a learn()
    batch_diagnostics: tuple[str, ...] = ()  # one figure per learn()

    def __init__(self, model: AsymmetricPolicyNetwork, config: RunConfig, table: torch.Tensor, report: Callable[[str, str], None]):
        device = table.device
        self.model, self.config, self.device, self.report = model, config, device, report
        # foreach: the same arithmetic as the per-tensor loop (tested equal), in a fraction of the calls on a CPU
        self.macro_optimizer = torch.optim.Adam(model.macro_net.parameters(), lr=config.lr_macro, foreach=True)
        self.micro_optimizer = torch.optim.Adam(model.micro_parameters(), lr=config.lr_micro, foreach=True)
        self.amp_dtype, use_scaler, self.amp_note = amp_settings(config, device)
        if config.use_amp and self.amp_dtype is None:
            report("warning", self.amp_note)
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.table = table  # (rows, features) of the train split, on the device
        # The loss re-evaluates with the network itself; rollouts use the same function with BatchNorm folded in.
        self.folded = FoldedPolicy(model)
        self.embed, self.head, self.heads = BarEmbedding(model), model.head, model.heads
        rollout = self.folded.folded
        self.rollout_policy, self.rollout_embed = self.folded, BarEmbedding(rollout)
        self.rollout_head, self.rollout_heads = rollout.head, rollout.heads
        if config.compile_model:
            reported: set[str] = set()

            def warn(text: str) -> None:  # every compiled part fails the same way: say it once
                if text not in reported:
                    reported.add(text)
                    report("warning", text)
            compiled = lambda module, dynamic=False: FallbackPolicy(module, config.compile_backend, warn, dynamic)
            # The number of distinct bars in a batch varies: the loss's embedding gets a dynamic batch size.
            self.embed, self.head, self.heads = compiled(self.embed, dynamic=True), compiled(self.head), compiled(self.heads)
            self.rollout_policy, self.rollout_embed, self.rollout_head, self.rollout_heads = map(
                compiled, (self.folded, self.rollout_embed, self.rollout_head, self.rollout_heads))
        self.micro_updates = self.macro_updates = 0
        self.nan_skips = self.scaler_skips = self.nan_streak = 0
        self.pending_backwards = 0  # backward passes accumulated since the last optimizer step
        self.update_macro = True
        self.last_loss = torch.zeros((), device=device)
        self.interrupted: Callable[[], bool] = lambda: False  # the training loop's "must the run end now?"
        self.diagnostic_sums = torch.zeros(len(self.step_diagnostics), device=device)  # over this learn()'s backward passes
        self.last_diagnostics: torch.Tensor | dict[str, float] = {}  # the last learn()'s: on the device until read

    def diagnostics(self) -> dict[str, float]:
        """The last learn()'s diagnostics, read from the device once per learn(), and the learning rate now
        (lr_micro; lr_macro follows the same schedule)."""
        if isinstance(self.last_diagnostics, torch.Tensor):
            self.last_diagnostics = dict(zip(self.step_diagnostics + self.batch_diagnostics, self.last_diagnostics.tolist()))
        return {**self.last_diagnostics, "learning_rate": self.micro_optimizer.param_groups[0]["lr"]}

    def finish_diagnostics(self, backwards: int, *batch: torch.Tensor) -> None:
        self.last_diagnostics = torch.cat([self.diagnostic_sums / backwards, *(value.reshape(1).float() for value in batch)])
        self.diagnostic_sums = torch.zeros_like(self.diagnostic_sums)

    @property
    def is_compiled(self) -> bool:
        return getattr(self.embed, "compiled", None) is not None

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def anneal(self, remaining: float) -> None:
        """Scale both learning rates to `remaining` (1 at the start of the run, 0 at its end)."""
        for optimizer, rate in ((self.macro_optimizer, self.config.lr_macro), (self.micro_optimizer, self.config.lr_micro)):
            for group in optimizer.param_groups:
                group["lr"] = rate * remaining

    def begin_accumulation(self) -> None:
        """At the first backward of an optimizer step: does MacroNet take part in this one?"""
        if self.pending_backwards == 0:
            self.update_macro = self.micro_updates % self.config.macro_every == 0

    def embedded(self, rows: torch.Tensor) -> torch.Tensor:
        """MacroNet + MicroNet once per distinct bar of `rows`, gathered back to one row per sample."""
        bars, sample_bar = torch.unique(rows, return_inverse=True)
        with self.autocast():
            embedding = self.embed(self.table.index_select(0, bars), self.update_macro)
        return embedding.index_select(0, sample_bar)

    def step(self) -> bool:
        """Clip, step the optimizers the schedule allows, count. False when the update was skipped."""
        optimizers = [self.micro_optimizer] + ([self.macro_optimizer] if self.update_macro else [])
        parameters = self.model.micro_parameters() + (list(self.model.macro_net.parameters()) if self.update_macro else [])
        for optimizer in optimizers:
            self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
        finite = bool(torch.isfinite(norm))  # one sync per update, never per env step
        if finite or self.scaler.is_enabled():
            scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            for optimizer in optimizers:
                self.scaler.step(optimizer)
            self.scaler.update()
            if self.scaler.is_enabled() and self.scaler.get_scale() < scale_before:
                self.scaler_skips += 1  # the scaler found inf/NaN gradients and skipped this step
        self.zero_grad()
        if not finite and not self.scaler.is_enabled():
            self._skip_non_finite()
            return False
        self.nan_streak = 0
        self.micro_updates += 1
        self.macro_updates += int(self.update_macro)
        return True

    def zero_grad(self) -> None:
        """Drop gradients and anything accumulated (after a step, or when a batch is abandoned)."""
        self.macro_optimizer.zero_grad(set_to_none=True)
        self.micro_optimizer.zero_grad(set_to_none=True)
        self.pending_backwards = 0

    def calibrate_batchnorm(self, seed: int) -> None:
        """Initial BatchNorm statistics from training observations (flat, start equity) — before any rollout."""
        rows = np.random.default_rng(seed).choice(len(self.table), size=min(len(self.table), BATCHNORM_SAMPLE), replace=False)
        bars = self.table.index_select(0, torch.as_tensor(rows, device=self.table.device))
        flat_at_start = torch.tensor([0.0, 1.0], device=bars.device).expand(len(rows), 2)
        self.model.refresh_batchnorm(torch.cat([bars, flat_at_start], dim=1), cumulative=True)

    def refresh_batchnorm(self, rows: torch.Tensor, states: torch.Tensor) -> None:
        """BatchNorm statistics from a sample of the observations just learned from."""
        sample = torch.randperm(rows.shape[0], device=rows.device)[:BATCHNORM_SAMPLE]
        observations = torch.cat([self.table.index_select(0, rows[sample]), states[sample].float()], dim=1)
        self.model.refresh_batchnorm(observations)

    def _skip_non_finite(self) -> None:
        self.nan_skips += 1
        self.nan_streak += 1
        self.report("warning", f"non-finite loss or gradients: update skipped ({self.nan_skips} so far)")
        limit = self.config.max_nan_updates
        if limit and self.nan_streak >= limit:
            config = self.config
            causes = [f"lower reward_scale (now {config.reward_scale:g}; 100 is the default)"] if config.reward_scale > 1e3 else []
            causes += ["lower lr_micro / lr_macro"] + (["turn AMP off"] if config.use_amp else [])
            raise TrainingStopped(f"training diverged: {self.nan_streak} non-finite updates in a row; {', or '.join(causes)}")

    def state_dict(self) -> dict:
        return {"macro_optimizer": self.macro_optimizer.state_dict(), "micro_optimizer": self.micro_optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "micro_updates": self.micro_updates, "macro_updates": self.macro_updates,
                "nan_skips": self.nan_skips, "scaler_skips": self.scaler_skips}

    def load_state_dict(self, state: dict) -> None:
        self.macro_optimizer.load_state_dict(state["macro_optimizer"])
        self.micro_optimizer.load_state_dict(state["micro_optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        for key in ("micro_updates", "macro_updates", "nan_skips", "scaler_skips"):
            setattr(self, key, state[key])


class ReinforceLearner(Learner):
    """REINFORCE with normalized discounted returns (the seed's algorithm)."""

    algorithm = "reinforce"
    step_diagnostics = ("entropy", "policy_loss")

    def learn(self, rollout: Rollout) -> bool:
        """Backward one rollout; step the optimizers once every `gradient_accumulation_steps` rollouts.
        Advantages are discounted returns normalized over the rollout. True when a step happened."""
        returns = discounted_returns(rollout.rewards, self.config.gamma)
        advantages = (returns - returns.mean()) / (returns.std() + 1e-8)
        rows, states = rollout.rows.reshape(-1), rollout.states.reshape(-1, rollout.states.shape[-1])
        self.accumulate(rows, states, rollout.actions.reshape(-1), advantages.reshape(-1))
        self.finish_diagnostics(1)
        if self.pending_backwards < self.config.gradient_accumulation_steps:
            return False
        if self.step():
            self.refresh_batchnorm(rows, states)
        return True

    def accumulate(self, rows: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor) -> None:
        """Add this batch's policy gradient, weighted 1 / gradient_accumulation_steps, to the .grad buffers.

        MacroNet + MicroNet run once per distinct bar; the head runs per sample in chunks whose
        gradients flow into the shared bar embeddings, which are then back-propagated once."""
        config = self.config
        self.begin_accumulation()
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
            policy_loss = -(chosen * advantages[chunk]).sum()
            loss = policy_loss - config.entropy_coef * entropy.sum()
            self.scaler.scale(loss * scale).backward()
            total_loss += loss.detach() / samples
            self.diagnostic_sums += torch.stack([entropy.sum(), policy_loss]).detach() / samples
        embedding.backward(shared.grad)  # into MicroNet (and MacroNet on its updates), once per bar
        self.last_loss = total_loss
        self.pending_backwards += 1


class PPOLearner(Learner):
    """PPO with GAE and a clipped objective; several epochs of minibatch steps per rollout."""

    algorithm = "ppo"
    step_diagnostics = ("approx_kl", "clip_fraction", "entropy", "policy_loss", "value_loss")
    batch_diagnostics = ("explained_variance",)

    def learn(self, batch: PPOBatch) -> bool:
        """`ppo_epochs` x `ppo_minibatches` steps, ending early (between optimizer steps) when the run must end."""
        config = self.config
        advantages, targets = generalized_advantages(batch.rewards, batch.values, batch.dones, batch.last_value,
                                                     config.gamma, config.gae_lambda)
        flat = lambda tensor: tensor.reshape(-1, *tensor.shape[2:])
        rows, states, actions, old_log_probs = flat(batch.rows), flat(batch.states), flat(batch.actions), flat(batch.log_probs)
        advantages, targets = flat(advantages), flat(targets)
        samples, size = rows.shape[0], max(1, rows.shape[0] // config.ppo_minibatches)

        def minibatches():
            for _ in range(config.ppo_epochs):
                order = torch.randperm(samples, device=rows.device)
                yield from (order[start : start + size] for start in range(0, samples - size + 1, size))
        stepped, backwards = False, 0
        for index in minibatches():
            if self.pending_backwards == 0 and self.interrupted():
                break
            self.accumulate(rows[index], states[index], actions[index], old_log_probs[index], advantages[index], targets[index])
            backwards += 1
            if self.pending_backwards >= config.gradient_accumulation_steps:
                stepped = self.step() or stepped
        self.finish_diagnostics(backwards, explained_variance(flat(batch.values), targets))
        if stepped:
            self.refresh_batchnorm(rows, states)
        return stepped

    def accumulate(self, rows, states, actions, old_log_probs, advantages, targets) -> None:
        """One minibatch's PPO loss, backward, weighted 1 / gradient_accumulation_steps."""
        config = self.config
        self.begin_accumulation()
        embedding = self.embedded(rows)
        with self.autocast():
            logits, values = self.heads(torch.cat([embedding, states.to(embedding.dtype)], dim=1))
        log_probs = F.log_softmax(logits.float(), dim=1)
        new_log_probs = log_probs.gather(1, actions.unsqueeze(1)).squeeze(1)
        entropy = -(log_probs.exp() * log_probs).sum(1).mean()
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = clipped_surrogate(new_log_probs, old_log_probs, advantages, config.clip_coef).mean()
        value_loss = 0.5 * (values.float() - targets).pow(2).mean()
        loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
        self.scaler.scale(loss / config.gradient_accumulation_steps).backward()
        self.last_loss = loss.detach()
        self.pending_backwards += 1
        with torch.no_grad():  # CleanRL's estimator of KL(old || new), and how often the ratio left the clip range
            log_ratio = new_log_probs - old_log_probs
            ratio = log_ratio.exp()
            self.diagnostic_sums += torch.stack([((ratio - 1) - log_ratio).mean(), ((ratio - 1).abs() > config.clip_coef).float().mean(),
                                                      entropy, policy_loss, value_loss])


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Var(target - predicted) / Var(target): 1 is perfect, 0 no better than the mean, NaN for a constant target."""
    variance = target.var(unbiased=False)
    return torch.where(variance > 0, 1 - (target - predicted.float()).var(unbiased=False) / variance, torch.nan)


HINTS = (  # (diagnostic, outside its healthy range, what to do): the ranges CleanRL and SB3 users know
    ("approx_kl", lambda v: v > 0.05, "approx KL {:.3f} > 0.05: each update moves the policy far; lower the learning rates or ppo_epochs"),
    ("clip_fraction", lambda v: v > 0.3, "clip fraction {:.2f} > 0.3: most samples hit the clip; lower the learning rates or ppo_epochs"),
    ("explained_variance", lambda v: v < 0, "explained variance {:.2f} < 0: the value head predicts returns worse than their mean "
                                            "(usual early on; if it lasts, lower the learning rates or reward_scale)"),
    ("entropy", lambda v: v < 0.1, "entropy {:.2f} (at most ln 3 = 1.10): the policy is almost deterministic; raise entropy_coef"),
)


def diagnostic_hints(progress) -> list[str]:
    """One line per diagnostic of a `Progress` outside its healthy range (NaN, not measured: no line)."""
    return [text.format(value) for name, outside, text in HINTS if outside(value := getattr(progress, name, math.nan))]


def make_learner(algorithm: str, model: AsymmetricPolicyNetwork, config: RunConfig, table: torch.Tensor,
                 report: Callable[[str, str], None]) -> Learner:
    return {"reinforce": ReinforceLearner, "ppo": PPOLearner}[algorithm](model, config, table, report)
