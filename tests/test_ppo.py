"""PPO: GAE, clipping, bootstrap at truncation, persistent environments with auto-reset, diagnostics, and learning."""

import json

import numpy as np
import pytest
import torch

from engine.env import BUY, HOLD, SELL, EnvConfig, VectorizedTradingEnv
from engine.features import Features
from engine.learners import PPOBatch, clipped_surrogate, generalized_advantages
from engine.trainers import OptimizedTrainer


def test_gae_matches_a_hand_computation():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])  # the episode ends after step 1; step 2 starts a new one
    last_value = torch.tensor([2.0])
    # step 2: delta = 3 + 0.9*2 - 1.5 = 3.3; A2 = 3.3
    # step 1: ends the episode: delta = 2 - 1 = 1; A1 = 1 (nothing flows back across the end)
    # step 0: delta = 1 + 0.9*1 - 0.5 = 1.4; A0 = 1.4 + 0.9*0.8*1 = 2.12
    advantages, targets = generalized_advantages(rewards, values, dones, last_value, gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor([[2.12], [1.0], [3.3]]))
    torch.testing.assert_close(targets, advantages + values)


def test_gae_with_lambda_one_and_no_ends_is_the_bootstrapped_discounted_return():
    rewards = torch.randn(20, 3)
    values = torch.randn(20, 3)
    last_value = torch.randn(3)
    _, targets = generalized_advantages(rewards, values, torch.zeros(20, 3), last_value, 0.95, 1.0)
    expected, running = torch.zeros(20, 3), last_value.clone()
    for t in reversed(range(20)):
        running = rewards[t] + 0.95 * running
        expected[t] = running
    torch.testing.assert_close(targets, expected, rtol=1e-5, atol=1e-5)


def test_clipping_stops_the_gradient_beyond_the_trust_region():
    old = torch.zeros(4)
    new = torch.tensor([0.5, 0.05, -0.5, -0.05], requires_grad=True)  # ratios e^0.5, e^0.05, e^-0.5, e^-0.05
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    clipped_surrogate(new, old, advantages, 0.2).sum().backward()
    # A positive advantage with the ratio already above 1.2, or a negative one below 0.8: no push further.
    assert new.grad[0] == 0 and new.grad[2] == 0
    assert new.grad[1] < 0 and new.grad[3] > 0  # inside the region the loss still moves the log-prob


def flat_features(rows=40, price=100.0):
    return Features(np.zeros((rows, 3), np.float32), np.zeros((rows, 3), np.float32), np.full(rows, price),
                    np.zeros(rows, "datetime64[ns]"))


def test_persistent_envs_truncate_then_restart_at_a_fresh_bar():
    env = VectorizedTradingEnv(flat_features(), 4, EnvConfig(episode_steps=3))
    env.reset()
    for step in range(3):
        reward, terminated, truncated, final_rows, final_state, final_equity = env.step_autoreset(torch.full((4,), BUY))
        assert not terminated.any()
        assert truncated.all() == (step == 2)
    # Truncated after the 3rd step: the final state is what the episode would have seen next ...
    assert (final_state[:, 0] == 1).all()
    torch.testing.assert_close(final_equity, torch.full((4,), 1 - 0.0015))
    # ... and the environment has already restarted: flat, fresh equity, step 0, a valid start.
    assert (env.level == 0).all() and (env.equity == 1).all() and (env.t == 0).all()
    assert ((env.start >= 0) & (env.start <= 40 - 1 - 3)).all()


def test_ruin_terminates_and_restarts_only_that_episode():
    features = flat_features()
    features.close[10:] = 1e-9  # a crash: a long position loses everything
    env = VectorizedTradingEnv(features, 2, EnvConfig(episode_steps=30))
    env.reset(starts=torch.tensor([9, 0]))
    reward, terminated, truncated, _, _, final_equity = env.step_autoreset(torch.tensor([BUY, HOLD]))
    assert terminated.tolist() == [True, False] and not truncated.any()
    assert final_equity[0] < 1e-6 and final_equity[1] == 1.0
    assert env.t.tolist() == [0, 1] and env.level.tolist() == [0.0, 0.0] and env.equity[0] == 1.0


def test_stagger_spreads_episode_ends():
    env = VectorizedTradingEnv(flat_features(200), 64, EnvConfig(episode_steps=50))
    env.reset(generator=torch.Generator().manual_seed(0))
    env.stagger(torch.Generator().manual_seed(1))
    ends = []
    for _ in range(50):
        ends.append(env.step_autoreset(torch.full((64,), HOLD))[2].sum().item())
    assert max(ends) < 64 and sum(ends) == 64  # every episode ends once, not all at the same step


def test_a_repeated_action_is_the_action_then_holds_and_an_episode_ending_inside_keeps_its_end():
    """step_autoreset(repeat=3) against three single steps (the action, then HOLD twice) on a twin
    environment: summed rewards, and each episode's end flags and final row, state and equity taken at
    the bar where it ended (7-bar episodes end inside a 3-bar decision)."""
    features = Features(np.zeros((60, 3), np.float32), np.zeros((60, 3), np.float32),
                        100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, 60))), np.zeros(60, "datetime64[ns]"))
    config = EnvConfig(episode_steps=7)
    repeated, single = VectorizedTradingEnv(features, 8, config), VectorizedTradingEnv(features, 8, config)
    generators = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for env, generator in zip((repeated, single), generators):
        env.reset(generator=generator)
    actions = torch.Generator().manual_seed(6)
    ended_inside = 0
    for _ in range(10):
        action = torch.randint(0, 3, (8,), generator=actions)
        got = repeated.step_autoreset(action, generators[0], repeat=3)
        reward, done = torch.zeros(8), torch.zeros(8, dtype=torch.bool)
        ends = [None] * 8
        for bar in range(3):
            step = single.step_autoreset(action if bar == 0 else torch.full((8,), HOLD), generators[1])
            reward += step[0]
            for n in range(8):
                if not done[n] and (step[1][n] or step[2][n] or bar == 2):
                    ends[n] = (step[1][n], step[2][n], step[3][n], step[4][n], step[5][n])
                    ended_inside += bar < 2 and bool(step[2][n])
            done |= step[1] | step[2]
        torch.testing.assert_close(got[0], reward)
        for n in range(8):
            assert [got[k][n].tolist() for k in range(1, 6)] == [value.tolist() for value in ends[n]]
        assert torch.equal(repeated.rows(), single.rows()) and torch.equal(repeated.level, single.level)
    assert ended_inside > 0


@pytest.mark.parametrize("repeat", [1, 3])
def test_rollout_bootstraps_the_value_where_a_time_limit_cuts_an_episode(tiny_config, tiny_splits, repeat):
    """Each stored decision's reward: its trade's fee and `repeat` bars of the new level (fewer where the
    episode ends), plus gamma x the value where a time limit ended it."""
    config = tiny_config(episode_steps=5, rollout_steps=12, num_envs=6, observe_equity=False, action_repeat=repeat)
    trainer = OptimizedTrainer(config, tiny_splits)
    batch, finished = trainer.collect()
    table, model, fee = trainer.learner.table, trainer.model, config.env_config().fee_rate
    returns = torch.as_tensor(tiny_splits.train.close[1:] / tiny_splits.train.close[:-1] - 1, dtype=torch.float32)
    checked = 0
    for t, n in np.ndindex(*batch.dones.shape):
        level, action, row = batch.states[t, n, 0], batch.actions[t, n], batch.rows[t, n]
        new_level = (level + (action == BUY).float() - (action == SELL).float()).clamp(-1, 1)
        held = lambda bars: (torch.log(1 - (new_level - level).abs() * fee) + torch.log(1 + new_level * returns[row : row + bars]).sum()) * config.reward_scale
        if not batch.dones[t, n]:
            torch.testing.assert_close(batch.rewards[t, n], held(repeat), rtol=1e-4, atol=1e-4)
            continue
        with torch.no_grad():  # the episode ended after 1..repeat bars: one of them is the reward stored
            bootstrap = lambda bars: config.gamma * model.value(torch.cat([table[row + bars], torch.stack([new_level, torch.tensor(1.0)])]).unsqueeze(0))[0]
            candidates = torch.stack([held(bars) + bootstrap(bars) for bars in range(1, repeat + 1)])
        assert (candidates - batch.rewards[t, n]).abs().min() < 1e-4
        checked += 1
    assert checked >= 6  # every episode ended at least once in 12 decisions of 5-bar episodes
    assert len(finished) == checked


def test_env_steps_count_bars_when_an_action_decides_several(tiny_config, tiny_splits):
    trainer = OptimizedTrainer(tiny_config(action_repeat=4, rollout_steps=8), tiny_splits)
    step = trainer.iterate()
    assert step.env_steps == 8 * 8 * 4 and trainer.bars_per_action == 4
    assert OptimizedTrainer(tiny_config(action_repeat=4, algorithm="reinforce"), tiny_splits).bars_per_action == 1  # REINFORCE decides every bar


def test_ppo_steps_the_optimizer_epochs_times_minibatches_per_rollout(tiny_config, tiny_splits):
    trainer = OptimizedTrainer(tiny_config(ppo_epochs=3, ppo_minibatches=2, rollout_steps=8), tiny_splits)
    trainer.iterate()
    assert trainer.learner.micro_updates == 6
    trainer.config.gradient_accumulation_steps = 2
    trainer.iterate()
    assert trainer.learner.micro_updates == 9


def test_eval_json_reports_agent_and_every_baseline_on_unseen_data(tiny_config, tmp_path, capsys):
    from asym_tui.cli import main
    from engine.runs import execute_run

    outcome = execute_run(tiny_config(max_episodes=8))
    assert main(["eval", str(outcome.run_dir), "--data", "synthetic:days=6,seed=99", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["data"] == "synthetic:days=6,seed=99" and report["split"] == "all"
    assert set(report["policies"]) == {"agent", "buy_and_hold", "flat", "random", "best_constant", "trailing_rule"}
    for metrics in report["policies"].values():
        assert metrics["long"] + metrics["short"] + metrics["flat"] == pytest.approx(1.0)
        assert {"sharpe", "total_return", "max_drawdown", "trades"} <= set(metrics)
    assert report["policies"]["buy_and_hold"]["long"] == pytest.approx(1.0, abs=1e-3)
    assert report["periods_per_year"] == pytest.approx(105_120)


EASY_MARKET = "synthetic:days={days},seed={seed},drift=0.002,regime_bars=400,volatility=0.3"


def test_ppo_learns_to_follow_regimes_on_an_easy_market(tiny_config):
    """Strong, long regimes: the trailing rule wins big. A constant policy (always long, short or flat)
    fails this test, on a series training never saw."""
    from engine.evaluation import evaluate_split, source_features
    from engine.runs import prepare_data
    from engine.trainers import make_trainer

    config = tiny_config(data=EASY_MARKET.format(days=20, seed=1), macro_window=96, micro_window=16, episode_steps=64,
                         num_envs=32, rollout_steps=32, max_episodes=0, duration_s=0, seed=0)
    splits = prepare_data(config)
    trainer = make_trainer(config, splits)
    while trainer.learner.micro_updates < 240:
        trainer.record(trainer.iterate(), 0)
    features, bar_seconds = source_features(EASY_MARKET.format(days=20, seed=2), splits.normalizer, 96, 16)
    results = evaluate_split(trainer.model, features, config.env_config(), bar_seconds)
    agent, rule, hold = (results[name].metrics for name in ("agent", "trailing_rule", "buy_and_hold"))
    assert agent["long"] > 0.1 and agent["short"] > 0.1
    assert agent["sharpe"] > hold["sharpe"] and agent["sharpe"] > 0.5 * rule["sharpe"] > 0


def test_diagnostics_match_a_hand_computation_on_a_fixed_minibatch(tiny_config, tiny_splits):
    """One minibatch holding the whole batch: every diagnostic against its formula, computed here from the
    network's own outputs (CleanRL's approximate KL and clip fraction, SB3's explained variance)."""
    config = tiny_config(ppo_epochs=1, ppo_minibatches=1, clip_coef=0.2, anneal_lr=False)
    trainer = OptimizedTrainer(config, tiny_splits)
    generator = torch.Generator().manual_seed(0)
    steps, envs = 4, 8
    rows = torch.randint(0, len(tiny_splits.train), (steps, envs), generator=generator)
    states = torch.stack([torch.randint(-1, 2, (steps, envs), generator=generator).float(), torch.ones(steps, envs)], dim=2)
    actions = torch.randint(0, 3, (steps, envs), generator=generator)
    model, table = trainer.model, trainer.learner.table
    with torch.no_grad():
        observations = torch.cat([table[rows.reshape(-1)], states.reshape(-1, 2)], dim=1)
        log_probs = torch.log_softmax(model(observations), dim=1)
        values = model.value(observations)
    chosen = log_probs.gather(1, actions.reshape(-1, 1)).squeeze(1)
    old_log_probs = chosen + 0.4 * torch.randn(chosen.shape, generator=generator)  # some ratios leave 1 +/- 0.2
    batch_values = values.reshape(steps, envs) + 0.3 * torch.randn(steps, envs, generator=generator)
    rewards, dones = torch.randn(steps, envs, generator=generator), (torch.rand(steps, envs, generator=generator) < 0.2).float()
    last_value = torch.randn(envs, generator=generator)
    batch = PPOBatch(rows, states, actions, old_log_probs.reshape(steps, envs), batch_values, rewards, dones, last_value)

    advantages, targets = generalized_advantages(rewards, batch_values, dones, last_value, config.gamma, config.gae_lambda)
    advantages, targets = advantages.reshape(-1), targets.reshape(-1)
    normalized = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = chosen - old_log_probs
    ratio = log_ratio.exp()
    expected = {
        "approx_kl": (ratio - 1 - log_ratio).mean(),
        "clip_fraction": ((ratio - 1).abs() > 0.2).float().mean(),
        "entropy": -(log_probs.exp() * log_probs).sum(1).mean(),
        "policy_loss": torch.maximum(-normalized * ratio, -normalized * ratio.clamp(0.8, 1.2)).mean(),
        "value_loss": 0.5 * ((values - targets) ** 2).mean(),
        "explained_variance": 1 - np.var((targets - batch_values.reshape(-1)).numpy()) / np.var(targets.numpy()),
        "learning_rate": config.lr_micro,
    }
    assert 0 < expected["clip_fraction"] < 1
    trainer.learner.learn(batch)
    measured = trainer.learner.diagnostics()
    assert measured.keys() == expected.keys()
    for name, value in expected.items():
        assert measured[name] == pytest.approx(float(value), rel=1e-4, abs=1e-6), name


def test_diagnostic_hints_name_what_is_out_of_range():
    from engine.events import Progress
    from engine.learners import diagnostic_hints

    healthy = Progress("optimized", "training", approx_kl=0.01, clip_fraction=0.1, explained_variance=0.5, entropy=0.9)
    assert diagnostic_hints(healthy) == []
    assert diagnostic_hints(Progress("original", "training")) == []  # not measured (NaN): nothing to say
    sick = Progress("optimized", "training", approx_kl=0.08, clip_fraction=0.35, explained_variance=-0.2, entropy=0.05)
    hints = diagnostic_hints(sick)
    assert [hint.split(" ")[0] for hint in hints] == ["approx", "clip", "explained", "entropy"]
    assert "0.080 > 0.05" in hints[0] and "0.35 > 0.3" in hints[1] and "-0.20 < 0" in hints[2]


def test_diagnostics_reach_the_progress_events_once_per_update(tiny_config, tiny_splits):
    trainer = OptimizedTrainer(tiny_config(rollout_steps=8, max_episodes=16), tiny_splits)
    result = trainer.run()
    trained = [row for row in result.history if row["micro_updates"]]
    assert trained and all(np.isfinite(row[name]) for row in trained for name in ("approx_kl", "clip_fraction", "entropy",
                                                                                  "policy_loss", "value_loss", "explained_variance"))
    assert all(0 < row["learning_rate"] <= 3e-4 for row in trained)  # annealed over the episode budget
