"""The asym-tui engine, read in this order (each module imports only those before it):

config (the run config, presets) → data (candles in, checked) → features (causal windows, splits) →
env (one episode, or N on the device) → model (MacroNet, MicroNet, head, value head) →
precision (the autocast dtype a device gets) → learners (REINFORCE, PPO: losses and optimizer steps) →
clock (warm-up, rates, budgets) and selection (what validation is, which weights a run keeps, "no edge ⇒
flat") → loop (the training loop both trainers share) →
trainers (how each collects experience) → events (what the UIs consume: Progress, LogMessage, RunSummary) →
checkpoints and runs (a run folder start to finish) → sweep (the executor), compare, walkforward, bench
(many runs at once) → policy (a trained policy outside the app: load, act, export).

Beside them: errors, files (atomic writes), readers (bounded-memory file readers), fetch (Binance kline
downloads), stats (IQM, bootstrap intervals, probability of improvement, PSR/DSR, PBO), metrics,
evaluation (backtests and baselines), trades (positions and trades tables), monitor (device readings),
doctor, report (report.png), gym_env (Gymnasium front doors). `asym_tui` only renders.
"""
