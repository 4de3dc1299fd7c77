"""`asym-tui bench`: warmed-up throughput of each trainer configuration, measured side by side in one run.

Each configuration is timed through `Trainer.iterate()` (collect, learn), the same unit a run loops
over. With PPO (default) an iteration is a 64-step rollout of persistent episodes and 16 optimizer
steps; with `--algorithm reinforce` it is one batch of whole episodes and one step. "Episodes" are
env-steps / episode length, so both trainers' episodes/min compare.

Every configuration trains the same network on the same data with the same episode length. Warm-up
iterations (compilation, CUDA graph capture, allocator growth) run first and are timed separately;
then whole iterations (rollout + update) are timed with the device synchronised at each boundary.
Ratios are taken against the original trainer measured in the same run, on the same device.

`run_data_sizes` repeats the matrix on synthetic markets of several lengths (`bench --days 30,365,1825`):
env-steps/s, updates/s and peak memory against the number of bars, the curve that shows whether a
trainer's cost follows its work or its data. Peak host memory is each configuration's own high-water
mark (reset before it on Linux; elsewhere the process's, which only grows).
"""

from __future__ import annotations

import dataclasses
import itertools
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine import precision
from engine.config import RunConfig, load_config
from engine.errors import ConfigError
from engine.features import MarketSplits
from engine.monitor import resolve_device
from engine.runs import prepare_data
from engine.synthetic import parse_synthetic_options
from engine.trainers import make_trainer


@dataclass
class BenchCase:
    trainer: str
    num_envs: int = 1
    use_amp: bool = False
    compile_model: bool = False
    cuda_graphs: bool = False
    days: int | None = None  # the synthetic market's length, on the data-size axis

    @property
    def configuration(self) -> str:
        if self.trainer == "original":
            return "original"
        flags = [f"{self.num_envs} envs", "AMP" if self.use_amp else "fp32"]
        flags += ["compile"] if self.compile_model else []
        flags += ["CUDA graphs"] if self.cuda_graphs else []
        return "optimized " + ", ".join(flags)

    @property
    def label(self) -> str:
        return self.configuration + (f", {self.days:,} days" if self.days else "")


@dataclass
class BenchResult:
    case: BenchCase
    episodes_per_min: float = 0.0
    steps_per_s: float = 0.0
    optimizer_steps_per_s: float = 0.0
    rollout_s: float = 0.0  # per iteration
    update_s: float = 0.0  # per iteration
    warmup_s: float = 0.0
    iterations: int = 0
    peak_host_mb: float = 0.0
    peak_device_mb: float | None = None
    train_bars: int = 0  # rows of the train split
    ratio: float | None = None  # episodes/min over the original trainer's, same run
    error: str = ""

    def row(self) -> dict:
        return {"label": self.case.label, "configuration": self.case.configuration, **dataclasses.asdict(self.case), **{k: v for k, v in dataclasses.asdict(self).items() if k != "case"}}


def default_cases(device: torch.device, quick: bool, num_envs: list[int] | None = None, amp: list[bool] | None = None,
                  compile_model: list[bool] | None = None, cuda_graphs: list[bool] | None = None) -> list[BenchCase]:
    """The matrix: the original trainer, then optimized over num_envs x AMP x compile (x CUDA graphs on CUDA)."""
    cuda = device.type == "cuda"
    if num_envs is None:
        num_envs = ([4096] if quick else [1024, 4096, 16384]) if cuda else ([256] if quick else [256, 1024, 4096])
    if amp is None:
        # bfloat16 emulated on a CPU without its instructions is not worth measuring (precision.CPU_WITHOUT_BFLOAT16)
        native = cuda or precision.cpu_bfloat16_native()
        amp = [cuda] if quick else ([False, True] if native else [False])
    compile_model = compile_model or [False]
    cuda_graphs = (cuda_graphs or ([True] if quick else [False, True])) if cuda else [False]
    cases = [BenchCase("original")]
    for envs, use_amp, compiled, graphs in itertools.product(num_envs, amp, compile_model, cuda_graphs):
        cases.append(BenchCase("optimized", envs, use_amp, compiled, graphs))
    return cases


def measure(case: BenchCase, base: RunConfig, splits: MarketSplits, warmup: int, iterations: int, min_seconds: float) -> BenchResult:
    config = dataclasses.replace(base, trainer=case.trainer, num_envs=max(case.num_envs, base.min_num_envs) if case.trainer == "optimized" else base.num_envs,
                                 use_amp=case.use_amp, compile_model=case.compile_model, cuda_graphs=case.cuda_graphs)
    result = BenchResult(case, train_bars=len(splits.train))
    reset_peak_host_memory()
    try:
        trainer = make_trainer(config, splits)
        device = trainer.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        started = time.perf_counter()
        for _ in range(warmup):
            trainer.iterate()
        result.warmup_s = time.perf_counter() - started
        steps, updates_before = 0, trainer.learner.micro_updates
        while result.iterations < iterations or result.rollout_s + result.update_s < min_seconds:
            step = trainer.iterate()
            result.rollout_s += step.rollout_s
            result.update_s += step.update_s
            result.iterations += 1
            steps += step.env_steps
        total = result.rollout_s + result.update_s
        # Episodes as env-steps / episode length: persistent (PPO) episodes end anywhere in a rollout.
        result.episodes_per_min = 60 * steps / trainer.episode_length / total
        result.steps_per_s = steps / total
        result.optimizer_steps_per_s = (trainer.learner.micro_updates - updates_before) / total
        result.rollout_s /= result.iterations
        result.update_s /= result.iterations
        result.peak_device_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        fallbacks = [m.text for m in trainer.messages if m.level in ("warning", "error")]
        if fallbacks:
            result.error = "; ".join(fallbacks)[:300]
    except Exception as exc:  # one failing configuration must not hide the others
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    finally:
        result.peak_host_mb = peak_host_mb()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return result


def run_bench(cases: list[BenchCase], base: RunConfig, splits: MarketSplits, warmup: int = 2, iterations: int = 2,
              min_seconds: float = 0.0, original_episodes: int = 3, on_result: Callable[[BenchResult], None] | None = None) -> dict:
    """Measure every case; the original trainer first, as every ratio's denominator."""
    results = []
    for case in cases:
        is_original = case.trainer == "original"
        result = measure(case, base, splits, 1 if is_original else warmup, original_episodes if is_original else iterations, min_seconds)
        results.append(result)
        if on_result:
            on_result(result)
    original = next((r for r in results if r.case.trainer == "original" and not r.error and r.episodes_per_min), None)
    for result in results:
        if original and result.episodes_per_min:
            result.ratio = result.episodes_per_min / original.episodes_per_min
    device, _ = resolve_device(base.device)
    return {
        "machine": machine_facts(device), "episode_steps": base.episode_steps, "data": base.data,
        "warmup_iterations": warmup, "measured_iterations": iterations, "results": [r.row() for r in results],
    }


def run_data_sizes(days: list[int], cases: list[BenchCase], base: RunConfig, warmup: int = 2, iterations: int = 2,
                   original_episodes: int = 3, on_result: Callable[[BenchResult], None] | None = None) -> dict:
    """The matrix on the synthetic market at each length in `days` (shortest first), ratios within each length;
    `curve` lists each configuration's throughput and peak memory against the number of bars."""
    reports = []
    for length in sorted(days):
        config = dataclasses.replace(base, data=sized_data(base.data, length))
        reports.append(run_bench([dataclasses.replace(case, days=length) for case in cases], config, prepare_data(config), warmup,
                                 iterations, original_episodes=original_episodes, on_result=on_result))
    results = [row for report in reports for row in report["results"]]
    curve = [{key: row[key] for key in ("configuration", "days", "train_bars", "steps_per_s", "optimizer_steps_per_s", "peak_host_mb",
                                        "peak_device_mb", "error")} for row in results]
    return {**reports[0], "data": base.data, "days": sorted(days), "results": results, "curve": curve}


def sized_data(data: str, days: int) -> str:
    """`data` (a synthetic source) with its length set to `days`: synthetic:seed=3 → synthetic:seed=3,days=365."""
    if not data.strip().startswith("synthetic"):
        raise ConfigError(f"bench --days sets the length of the synthetic market; --data {data} is not synthetic")
    options = {**parse_synthetic_options(data), "days": days}
    return "synthetic:" + ",".join(f"{key}={value}" for key, value in options.items())


def reset_peak_host_memory() -> None:
    """Linux: writing 5 to clear_refs resets the resident high-water mark (VmHWM) to the memory in use now."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:  # not Linux (or not allowed): the process's peak so far stands
        pass


def peak_host_mb() -> float:
    """The resident high-water mark since the last reset (Linux), else the process's peak."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if platform.system() == "Darwin" else 1024)


def machine_facts(device: torch.device) -> dict:
    facts = {"device": device.type, "torch": torch.__version__, "python": platform.python_version(),
             "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
             "cpu_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def bench_config(data: str, episode_steps: int, device: str, update_minibatch: int | None = None, algorithm: str = "ppo") -> RunConfig:
    """The shared config of every case; on CUDA the `cuda` preset's update minibatch. Every trainer decides
    at every bar (action_repeat 1), as the original does: the speed-ups compare the same work."""
    resolved, _ = resolve_device(device)
    overrides = {"data": data, "episode_steps": episode_steps, "device": device, "duration_s": 0, "max_episodes": 0, "algorithm": algorithm,
                 "eval_every_s": 0, "min_num_envs": 1, "action_repeat": 1,
                 "update_minibatch": update_minibatch or load_config("cuda" if resolved.type == "cuda" else None).update_minibatch}
    return load_config(None, overrides)
