import copy

import numpy as np
import pandas as pd
import pytest
import torch

from engine.evaluation import agent_backtest
from engine.features import prepare_splits
from engine import precision
from engine.learners import discounted_returns, sample_actions
from engine.events import LogMessage
from engine.trainers import OptimizedTrainer, make_trainer


def test_discounted_returns_match_the_definition():
    rewards = torch.randn(300, 5)
    expected = torch.zeros_like(rewards)
    running = torch.zeros(5)
    for t in reversed(range(300)):
        running = rewards[t] + 0.99 * running
        expected[t] = running
    torch.testing.assert_close(discounted_returns(rewards, 0.99), expected, rtol=1e-4, atol=1e-4)


def test_gumbel_sampling_follows_the_softmax():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).repeat(20_000, 1)
    counts = torch.bincount(sample_actions(logits), minlength=3).float() / 20_000
    torch.testing.assert_close(counts, torch.tensor([0.2, 0.5, 0.3]), atol=0.015, rtol=0)


def uptrend_candles(bars=1500):
    """A deterministic uptrend with a little noise: always long is optimal."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(0.002 + rng.normal(0, 0.0005, bars)))
    return pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=bars, freq="5min", tz="UTC"),
                         "open": close / 1.0005, "high": close * 1.001, "low": close / 1.0015, "close": close,
                         "volume": rng.uniform(10, 20, bars)})


@pytest.mark.parametrize("trainer", ["original", "optimized"])
def test_training_learns_a_trivially_learnable_trend(tiny_config, trainer):
    config = tiny_config(trainer=trainer, lr_micro=3e-3, lr_macro=6e-4, max_episodes=400 if trainer == "optimized" else 120, num_envs=16)
    splits = prepare_splits(uptrend_candles(), config.macro_window, config.micro_window)
    runner = make_trainer(config, splits)
    env_config = config.env_config()
    before = agent_backtest(runner.model, splits.train, env_config, 300).metrics["total_return"]
    runner.run()
    after = agent_backtest(runner.model, splits.train, env_config, 300).metrics["total_return"]
    buy_and_hold = splits.train.close[-1] / splits.train.close[0] - 1
    assert after > before
    assert after > 0.5 * buy_and_hold


def parameters_of(module):
    return [p.detach().clone() for p in module.parameters()]


def test_skipped_macro_updates_leave_macronet_alone_and_compute_no_gradients(tiny_config, tiny_splits):
    runner = OptimizedTrainer(tiny_config(macro_every=3, algorithm="reinforce"), tiny_splits)
    learner = runner.learner
    macro_gradients = []
    for parameter in runner.model.macro_net.parameters():
        parameter.register_hook(lambda grad: macro_gradients.append(1))
    for update in range(6):
        macro_before, micro_before = parameters_of(runner.model.macro_net), parameters_of(runner.model.micro_net)
        macro_gradients.clear()
        runner.iterate()
        macro_changed = any(not torch.equal(a, b) for a, b in zip(macro_before, runner.model.macro_net.parameters()))
        assert any(not torch.equal(a, b) for a, b in zip(micro_before, runner.model.micro_net.parameters()))
        expect_macro = update % 3 == 0
        assert macro_changed == expect_macro
        assert bool(macro_gradients) == expect_macro
    assert (learner.macro_updates, learner.micro_updates) == (2, 6)


def test_gradient_accumulation_equals_one_step_on_the_bigger_batch(tiny_config, tiny_splits):
    torch.manual_seed(0)
    rows = torch.randint(0, len(tiny_splits.train), (64,))
    states = torch.stack([torch.randint(-1, 2, (64,)).float(), 1 + 0.1 * torch.randn(64)], dim=1)
    actions = torch.randint(0, 3, (64,))
    advantages = torch.randn(64)

    def trained(accumulation, batches):
        runner = OptimizedTrainer(tiny_config(gradient_accumulation_steps=accumulation, seed=1, algorithm="reinforce"), tiny_splits)
        for part in batches:
            runner.learner.accumulate(rows[part], states[part], actions[part], advantages[part])
        runner.learner.step()
        return parameters_of(runner.model)

    accumulated = trained(2, [slice(0, 32), slice(32, 64)])
    single = trained(1, [slice(0, 64)])
    for a, b in zip(accumulated, single):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_loss_on_shared_bars_equals_the_per_sample_loss(tiny_config, tiny_splits):
    """Embedding each distinct bar once and gathering gives the gradient of the plain per-sample forward."""
    torch.manual_seed(0)
    runner = OptimizedTrainer(tiny_config(entropy_coef=0.0, algorithm="reinforce"), tiny_splits)
    rows = torch.randint(0, 20, (256,))  # many samples share few bars
    states = torch.stack([torch.randint(-1, 2, (256,)).float(), 1 + 0.1 * torch.randn(256)], dim=1)
    actions, advantages = torch.randint(0, 3, (256,)), torch.randn(256)
    runner.learner.accumulate(rows, states, actions, advantages)
    policy = [*runner.model.macro_net.parameters(), *runner.model.micro_net.parameters(), *runner.model.head.parameters()]
    shared = [p.grad.clone() for p in policy]
    runner.model.zero_grad()
    observations = torch.cat([runner.learner.table[rows], states], dim=1)
    log_probs = torch.log_softmax(runner.model(observations), dim=1)
    (-(log_probs.gather(1, actions.unsqueeze(1)).squeeze(1) * advantages).sum() / 256).backward()
    for a, b in zip(shared, (p.grad for p in policy)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_accumulation_steps_the_optimizer_every_k_rollouts(tiny_config, tiny_splits):
    runner = OptimizedTrainer(tiny_config(gradient_accumulation_steps=3, algorithm="reinforce"), tiny_splits)
    stepped = [runner.learner.learn(runner.collect()[0]) for _ in range(6)]
    assert stepped == [False, False, True, False, False, True]
    assert runner.learner.micro_updates == 2


@pytest.mark.parametrize("overrides", [{"use_amp": True}, {"compile_model": True, "compile_backend": "aot_eager"},
                                       {"use_amp": True, "amp_dtype": "float16"}])
def test_amp_and_compile_switches_run_on_cpu(tiny_config, tiny_splits, overrides, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bfloat16_native", lambda: True)  # the bfloat16 path, whatever this CPU has
    runner = make_trainer(tiny_config(max_episodes=16, **overrides), tiny_splits)
    result = runner.run()
    assert result.status == "completed" and runner.episodes == 16
    assert np.isfinite(result.last.loss)
    if overrides.get("use_amp"):
        assert runner.learner.amp_dtype == torch.bfloat16 and "bfloat16" in runner.learner.amp_note
    if overrides.get("compile_model"):
        assert runner.learner.is_compiled


def test_compile_failure_falls_back_to_eager_and_is_reported(tiny_config, tiny_splits, monkeypatch):
    events = []
    runner = make_trainer(tiny_config(compile_model=True, compile_backend="aot_eager", max_episodes=16), tiny_splits, on_event=events.append)

    def broken(*args, **kwargs):
        raise RuntimeError("inductor exploded")
    runner.learner.embed.compiled = broken
    result = runner.run()
    warnings = [e.text for e in events if isinstance(e, LogMessage)]
    assert result.status == "completed" and runner.episodes == 16
    assert len(warnings) == 1 and "inductor exploded" in warnings[0] and "eager" in warnings[0]
    assert not runner.learner.is_compiled


def test_compile_failure_at_wrap_time_is_reported(tiny_config, tiny_splits, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no compiler here")
    monkeypatch.setattr(torch, "compile", refuse)
    events = []
    runner = make_trainer(tiny_config(compile_model=True, max_episodes=8), tiny_splits, on_event=events.append)
    assert runner.run().status == "completed"
    assert any("no compiler here" in e.text for e in events if isinstance(e, LogMessage))


@pytest.mark.parametrize("trainer", ["original", "optimized"])
def test_same_seed_same_results_on_cpu(tiny_config, tiny_splits, trainer):
    def train():
        runner = make_trainer(tiny_config(trainer=trainer, max_episodes=24, seed=5, rollout_steps=16), tiny_splits)
        result = runner.run()
        return [row["loss"] for row in result.history[1:]], parameters_of(runner.model)

    (losses_a, params_a), (losses_b, params_b) = train(), train()
    assert losses_a == losses_b and len(losses_a) > 2
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    runner = make_trainer(tiny_config(trainer=trainer, max_episodes=24, seed=6), tiny_splits)
    runner.run()
    assert not all(torch.equal(a, b) for a, b in zip(params_a, parameters_of(runner.model)))


def test_stop_signal_stops_training(tiny_config, tiny_splits):
    import threading
    stop = threading.Event()
    runner = make_trainer(tiny_config(max_episodes=0, duration_s=0), tiny_splits, stop=stop,
                          on_event=lambda e: stop.set() if getattr(e, "episodes", 0) >= 16 else None)
    result = runner.run()
    assert result.status == "stopped" and result.stop_reason == "stopped by the user"


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_optimized_rollout_copies_nothing_from_the_host(tiny_config, tiny_splits, monkeypatch, algorithm):
    """The whole rollout is captured as one CUDA graph on CUDA: it must not create tensors from host data."""
    runner = OptimizedTrainer(tiny_config(mirror_train=False, algorithm=algorithm), tiny_splits)
    runner.learner.folded.sync()

    def refuse(*args, **kwargs):
        raise AssertionError("a host-to-device copy inside the rollout")
    monkeypatch.setattr(torch, "as_tensor", refuse)
    monkeypatch.setattr(torch, "tensor", refuse)
    final_equity = runner.ppo_rollout() if algorithm == "ppo" else runner.episode_rollout()
    assert final_equity.shape == (8,)
    if algorithm == "reinforce":
        assert (runner.rows[-1] > runner.rows[0]).all()


def test_foreach_adam_is_the_per_tensor_arithmetic(tiny_config, tiny_splits):
    """The learners' Adam runs foreach (far fewer calls on a CPU); it must learn exactly what the plain loop learns."""
    runner = OptimizedTrainer(tiny_config(), tiny_splits)
    plain = {name: copy.deepcopy(runner.model.macro_net) for name in ("foreach", "loop")}
    optimizers = {"foreach": torch.optim.Adam(plain["foreach"].parameters(), lr=1e-3, foreach=True),
                  "loop": torch.optim.Adam(plain["loop"].parameters(), lr=1e-3, foreach=False)}
    assert runner.learner.macro_optimizer.defaults["foreach"] and runner.learner.micro_optimizer.defaults["foreach"]
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        gradients = [torch.randn(p.shape, generator=generator) for p in plain["loop"].parameters()]
        for name, optimizer in optimizers.items():
            for parameter, gradient in zip(plain[name].parameters(), gradients):
                parameter.grad = gradient.clone()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(plain["foreach"].parameters(), plain["loop"].parameters()))


def test_amp_on_a_cpu_without_bfloat16_trains_in_float32_and_says_so(tiny_config, tiny_splits, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bfloat16_native", lambda: False)
    events = []
    runner = make_trainer(tiny_config(max_episodes=16, use_amp=True), tiny_splits, on_event=events.append)
    assert runner.learner.amp_dtype is None and runner.learner.amp_note == precision.CPU_WITHOUT_BFLOAT16
    assert [e.text for e in events if isinstance(e, LogMessage) and e.level == "warning"] == [precision.CPU_WITHOUT_BFLOAT16]
    assert runner.run().status == "completed"
