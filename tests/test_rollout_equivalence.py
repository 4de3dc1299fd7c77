"""A rollout that embeds only the bars it visits gives what embedding the whole train table gives: the same
rows, actions, rewards and log-probabilities for the same seed — and its cost follows num_envs x steps."""

import pytest
import torch

from engine.trainers import OptimizedTrainer


def rollouts(config, splits, embeds_table: bool, chunk_steps: int | None = None, iterations: int = 3) -> list[dict]:
    """Each iteration's collected batch (copied: the buffers are reused) and the weights after learning from it."""
    trainer = OptimizedTrainer(config, splits)
    trainer.embeds_table = embeds_table
    if chunk_steps:
        trainer.chunk_steps = trainer.chunk_steps[:chunk_steps]
    collected = []
    for _ in range(iterations):
        batch, finished = trainer.collect()
        collected.append({**{name: value.clone() for name, value in batch._asdict().items()}, "finished": finished.clone()})
        trainer.learner.learn(batch)
    collected[-1]["weights"] = [p.detach().clone() for p in trainer.model.parameters()]
    return collected


def assert_same(visited: list[dict], table: list[dict]) -> None:
    for ours, theirs in zip(visited, table):
        assert ours.keys() == theirs.keys()
        for name in ours:
            if name == "weights":
                assert all(torch.equal(a, b) for a, b in zip(ours[name], theirs[name]))
            else:
                torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0, msg=name)


def test_ppo_rollout_of_visited_bars_equals_the_whole_table(tiny_config, tiny_splits):
    # 5-step episodes in 12-step rollouts: episodes end, restart at fresh bars and bootstrap the value where cut
    config = tiny_config(episode_steps=5, rollout_steps=12, num_envs=16)
    visited, table = rollouts(config, tiny_splits, False), rollouts(config, tiny_splits, True)
    assert visited[0]["dones"].sum() >= 16
    assert_same(visited, table)


def test_reinforce_rollout_of_visited_bars_equals_the_whole_table(tiny_config, tiny_splits):
    config = tiny_config(algorithm="reinforce", episode_steps=32, num_envs=16)
    visited = rollouts(config, tiny_splits, False, chunk_steps=5)  # 32 steps: six chunks of 5 and one of 2
    assert_same(visited, rollouts(config, tiny_splits, True))


@pytest.mark.parametrize("algorithm, rows_per_rollout", [("ppo", lambda n, t: 2 * n * t + n), ("reinforce", lambda n, t: n * t)])
def test_a_rollout_embeds_what_it_visits_not_the_whole_split(tiny_config, tiny_splits, algorithm, rows_per_rollout):
    config = tiny_config(algorithm=algorithm, episode_steps=32, rollout_steps=16, num_envs=8)
    trainer = OptimizedTrainer(config, tiny_splits)
    embedded = []
    embed = trainer.learner.rollout_embed
    trainer.learner.rollout_embed = lambda bars, *args: embedded.append(len(bars)) or embed(bars, *args)
    trainer.collect()
    steps = 16 if algorithm == "ppo" else 32
    assert not trainer.embeds_table and sum(embedded) == rows_per_rollout(8, steps) < len(trainer.learner.table)


def test_the_whole_table_is_embedded_once_where_that_is_cheaper(tiny_config, tiny_splits):
    trainer = OptimizedTrainer(tiny_config(num_envs=64, rollout_steps=64), tiny_splits)  # 2 x 64 x 64 bars > the split
    assert trainer.embeds_table
