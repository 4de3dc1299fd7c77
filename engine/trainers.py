"""The two trainers: how each collects experience for the shared loop (engine/loop.py).

- `OriginalTrainer`: one `TradingEnv` episode at a time, batch size 1, a Python loop, REINFORCE.
- `OptimizedTrainer`: `num_envs` episodes at once in a `VectorizedTradingEnv`, all on the device.
  With PPO (the default) the episodes persist: each rollout continues them for `rollout_steps` steps
  and finished episodes restart on their own; with REINFORCE each rollout is a batch of whole episodes.
  MacroNet + MicroNet never see the position, so a rollout embeds bars apart from the head: only the bars
  it visits (each episode walks one bar a step), so its cost follows num_envs x steps, not the data's
  length — or every train bar once, where that is cheaper (many episodes on short data). Either way
  the same rows, actions, rewards and log-probabilities (tests/test_rollout_equivalence.py); fixed
  shapes and no host synchronisation, so the whole rollout can be one CUDA graph.

Both stop a rollout (`Interrupted`) as soon as the run must end: its duration is up, or the user stopped it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import RunConfig
from engine.env import TradingEnv, VectorizedTradingEnv, segment_lengths
from engine.features import MarketSplits
from engine.learners import Interrupted, Learner, PPOBatch, Rollout, TrainingStopped, sample_actions

from engine.loop import Trainer

EMBED_CHUNK_ROWS = 8192  # bars embedded together in a REINFORCE rollout (its rows are known ahead)
STEP_BATCH_COST = 2  # a bar embedded in one PPO step's small batch costs about this many bars of a whole-table pass (CPU profile)


def check_interrupt(learner: Learner) -> None:
    if learner.interrupted():
        raise Interrupted


class OriginalTrainer(Trainer):
    """The baseline: one `TradingEnv` episode at a time, one observation per forward pass, REINFORCE."""

    name = "original"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.env = TradingEnv(self.splits.train, self.env_config)
        self.env.reset(seed=self.config.seed)

    @property
    def episode_length(self) -> int:
        return min(self.config.episode_steps, max(segment_lengths(self.splits.train)) - 1)

    @torch.no_grad()
    def collect(self) -> tuple[Rollout, torch.Tensor]:
        self.learner.folded.sync()
        env, policy = self.env, self.learner.rollout_policy
        observation, _ = env.reset()
        rows, states, actions, rewards = [], [], [], []
        done = False
        with self.learner.autocast():
            while not done:
                check_interrupt(self.learner)
                logits = policy(torch.as_tensor(observation, device=self.device).unsqueeze(0))
                action = int(sample_actions(logits))
                rows.append(env.row)
                states.append(observation[-2:])
                next_observation, reward, terminated, truncated, _ = env.step(action)
                actions.append(action)
                rewards.append(reward)
                observation, done = next_observation, terminated or truncated
        as_batch = lambda values, dtype: torch.as_tensor(np.asarray(values), dtype=dtype, device=self.device).unsqueeze(1)
        final_equity = torch.tensor([env.equity], dtype=torch.float64)
        rollout = Rollout(as_batch(rows, torch.long), as_batch(states, torch.float32), as_batch(actions, torch.long),
                          as_batch(rewards, torch.float32), final_equity)
        return rollout, final_equity.clamp(min=1e-12).log()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "env_rng": self.env.np_random.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "env_rng" in state:
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

    @property
    def persistent(self) -> bool:
        return self.algorithm == "ppo"

    @property
    def bars_per_action(self) -> int:
        return self.config.action_repeat if self.persistent else 1  # REINFORCE decides every bar

    def build(self, num_envs: int) -> None:
        """(Re)create the environments and rollout buffers for `num_envs` episodes."""
        self.num_envs = num_envs
        self.env = VectorizedTradingEnv(self.splits.train, num_envs, self.env_config, self.device)
        steps = self.config.rollout_steps if self.persistent else self.env.episode_length
        # a PPO step embeds its bar and the next one (the bootstrap where a time limit ends the episode)
        visited_cost = num_envs * steps * (2 * STEP_BATCH_COST if self.persistent else 1)
        self.embeds_table = visited_cost >= len(self.learner.table)
        self.chunk_steps = torch.arange(max(1, EMBED_CHUNK_ROWS // num_envs), device=self.device).unsqueeze(1)
        new = lambda *shape, dtype=torch.float32: torch.zeros(steps, num_envs, *shape, dtype=dtype, device=self.device)
        self.rows, self.actions = new(dtype=torch.long), new(dtype=torch.long)
        self.states, self.rewards = new(2), new()
        if self.persistent:
            self.log_probs, self.values, self.dones, self.finished = new(), new(), new(), new()
            self.last_value = torch.zeros(num_envs, device=self.device)
            self.env.reset()
            self.env.stagger()
        self.graph = None

    def collect(self) -> tuple[Rollout | PPOBatch, torch.Tensor]:
        self.learner.folded.sync()  # in place, outside any CUDA graph: the graph reads these weights
        rollout = self.ppo_rollout if self.persistent else self.episode_rollout
        final = self.graph_rollout(rollout) if self.use_cuda_graph else rollout()
        if self.persistent:
            batch = PPOBatch(self.rows, self.states, self.actions, self.log_probs, self.values, self.rewards, self.dones, self.last_value)
            return batch, self.finished[self.dones.bool()]
        return Rollout(self.rows, self.states, self.actions, self.rewards, final), final.double().clamp(min=1e-12).log()

    def bar_embedder(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """This rollout's embeddings of bars (rows of any shape -> that shape x embedding): gathered from every
        train bar embedded once (`embeds_table`), or computed for the rows asked for only."""
        learner = self.learner
        if self.embeds_table:
            table = learner.rollout_embed(learner.table)
            return lambda rows: table.index_select(0, rows.reshape(-1)).unflatten(0, rows.shape)
        return lambda rows: learner.rollout_embed(learner.table.index_select(0, rows.reshape(-1))).unflatten(0, rows.shape)

    def check_interrupt(self) -> None:
        if not self.use_cuda_graph:  # a captured graph runs whole (and fast)
            check_interrupt(self.learner)

    @torch.no_grad()
    def episode_rollout(self) -> torch.Tensor:
        """REINFORCE: fill the buffers with one batch of whole episodes; returns the final equity (N,).
        All episodes walk forward together, so their bars are embedded a chunk of steps ahead."""
        env, learner, chunk = self.env, self.learner, len(self.chunk_steps)
        with learner.autocast():
            embed = self.bar_embedder()
            env.reset()
            for step in range(env.episode_length):
                self.check_interrupt()
                if step % chunk == 0:
                    ahead = embed(env.rows() + self.chunk_steps[: env.episode_length - step])
                rows, state, embedding = env.rows(), env.state(), ahead[step % chunk]
                logits = learner.rollout_head(torch.cat([embedding, state.to(embedding.dtype)], dim=1))
                actions = sample_actions(logits)
                self.rows[step].copy_(rows)
                self.states[step].copy_(state)
                self.actions[step].copy_(actions)
                self.rewards[step].copy_(env.advance(actions))
        return env.equity

    @torch.no_grad()
    def ppo_rollout(self) -> torch.Tensor:
        """PPO: continue the persistent episodes for `rollout_steps` steps, storing what the update needs.
        Where a time limit ends an episode, gamma x the value of the state it would have gone on to is
        added to the reward (the bootstrap); the value after the last step bootstraps the rollout."""
        env, learner, gamma, repeat = self.env, self.learner, self.config.gamma, self.bars_per_action
        with learner.autocast():
            embed = self.bar_embedder()
            heads = lambda embedding, state: learner.rollout_heads(torch.cat([embedding, state.to(embedding.dtype)], dim=1))
            for step in range(self.config.rollout_steps):
                self.check_interrupt()
                rows, state = env.rows(), env.state()
                logits, value = heads(embed(rows), state)
                actions = sample_actions(logits)
                log_probs = F.log_softmax(logits.float(), dim=1).gather(1, actions.unsqueeze(1)).squeeze(1)
                self.rows[step].copy_(rows)
                self.states[step].copy_(state)
                self.actions[step].copy_(actions)
                self.log_probs[step].copy_(log_probs)
                self.values[step].copy_(value.float())
                reward, terminated, truncated, final_rows, final_state, final_equity = env.step_autoreset(actions, repeat=repeat)
                final_value = heads(embed(final_rows), final_state)[1].float()  # where a time limit ended it
                self.rewards[step].copy_(reward + gamma * final_value * truncated.float())
                self.dones[step].copy_((terminated | truncated).float())
                self.finished[step].copy_(final_equity.clamp(min=1e-12).log())
            self.last_value.copy_(heads(embed(env.rows()), env.state())[1].float())
        return env.equity

    def graph_rollout(self, rollout: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Capture the whole rollout once as a CUDA graph, then replay it."""
        if self.graph is None:
            try:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):  # warm-up (and compilation) outside the capture
                        rollout()
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.graph_equity = rollout()
                self.graph = graph
                self.log("info", f"rollout captured as one CUDA graph ({self.rows.shape[0]} steps x {self.num_envs} episodes)")
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:
                self.use_cuda_graph = False
                self.log("warning", f"CUDA graph capture failed ({type(exc).__name__}: {str(exc)[:200]}); rollout without graphs")
                return rollout()
        self.graph.replay()
        return self.graph_equity

    def handle_out_of_memory(self) -> None:
        """Halve num_envs (down to min_num_envs), record it, and go on."""
        smaller = self.num_envs // 2
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


