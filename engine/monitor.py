"""Device choice and hardware readings. Every reading goes through one wrapper that returns None
(shown as "N/A") instead of raising, so a missing driver or library never stops training."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import psutil
import torch

from engine.errors import ConfigError


def _safe(default=None):
    def wrap(function):
        @functools.wraps(function)
        def guarded(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except Exception:  # any driver/library failure is a missing reading, not an error
                return default
        return guarded
    return wrap


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto") -> tuple[torch.device, str]:
    """The device to train on and why; `auto` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), f"CUDA is available ({torch.cuda.get_device_name(0)})"
        if mps_available():
            return torch.device("mps"), "Apple Metal (MPS) is available"
        return torch.device("cpu"), "no CUDA or MPS device found"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available here; use device 'auto' or 'cpu'")
    if name == "mps" and not mps_available():
        raise ConfigError("device 'mps' was asked for but Apple Metal (MPS) is not available here; use device 'auto' or 'cpu'")
    if name not in ("cuda", "mps", "cpu"):
        raise ConfigError(f"device {name!r} is not accepted; choose one of auto, cuda, mps, cpu")
    return torch.device(name), "chosen in the config"


NUM_ENVS_LIMIT = {"cpu": 4096, "mps": 1024, "cuda": 65536}  # beyond these the device can't hold the rollout


def num_envs_limit(device_type: str) -> int:
    """The most parallel episodes a device of this type takes (the CLI and the app apply the same rule)."""
    return NUM_ENVS_LIMIT.get(device_type, NUM_ENVS_LIMIT["cpu"])


def check_num_envs(num_envs: int, device_name: str) -> None:
    """Refuse more parallel episodes than the run's device takes, before any data is loaded."""
    device_type = resolve_device(device_name)[0].type
    if num_envs > num_envs_limit(device_type):
        raise ConfigError(f"num_envs {num_envs:,} is more than {device_type} takes (1–{num_envs_limit(device_type):,})")


@dataclass
class Reading:
    """One sample of this process's use of its device; None means N/A."""

    label: str  # "GPU" or "CPU"
    utilisation: float | None  # GPU: the GPU's use; CPU: this process's CPU use (% of all cores)
    memory_used_mb: float | None  # GPU: memory torch holds for this process; CPU: this process's resident memory
    memory_total_mb: float | None  # the device's memory (GPU) or the machine's (CPU)
    peak_allocated_mb: float | None  # GPU: torch's peak allocation; CPU: the largest resident memory seen
    process_cpu: float | None = None  # this process's CPU use, % of all cores
    process_rss_mb: float | None = None


class DeviceMonitor:
    def __init__(self, device: torch.device):
        self.device = device
        self.process = psutil.Process(os.getpid())
        self.cores = psutil.cpu_count() or 1
        self.handle = self._nvml_handle() if device.type == "cuda" else None
        self.peak_rss_mb: float | None = None
        self._process_cpu()  # the first call only starts the measurement

    @_safe()
    def _nvml_handle(self):
        import pynvml

        pynvml.nvmlInit()
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def read(self) -> Reading:
        cpu, rss = self._process_cpu(), self._rss()
        if rss is not None:
            self.peak_rss_mb = max(rss, self.peak_rss_mb or 0.0)
        if self.device.type == "cuda":
            return Reading("GPU", self._gpu_utilisation(), self._cuda_reserved(), self._gpu_total(), self._peak_cuda(), cpu, rss)
        if self.device.type == "mps":
            return Reading("GPU", None, self._mps_memory(), None, self._mps_memory(), cpu, rss)
        return Reading("CPU", cpu, rss, psutil.virtual_memory().total / 2**20, self.peak_rss_mb, cpu, rss)

    @_safe()
    def _process_cpu(self) -> float:
        return min(100.0, self.process.cpu_percent(interval=None) / self.cores)

    @_safe()
    def _gpu_utilisation(self) -> float:
        import pynvml

        return float(pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    @_safe()
    def _gpu_total(self) -> float:
        return torch.cuda.get_device_properties(self.device).total_memory / 2**20

    @_safe()
    def _cuda_reserved(self) -> float:
        return torch.cuda.memory_reserved(self.device) / 2**20

    @_safe()
    def _peak_cuda(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    @_safe()
    def _mps_memory(self) -> float:
        return torch.mps.current_allocated_memory() / 2**20

    @_safe()
    def _rss(self) -> float:
        return self.process.memory_info().rss / 2**20


def gpu_facts() -> dict[str, str]:
    """Name, memory and driver of each NVIDIA GPU through NVML; empty when there is none."""
    return _gpu_facts() or {}


@_safe()
def _gpu_facts() -> dict[str, str]:
    import pynvml

    pynvml.nvmlInit()
    facts = {"driver": str(pynvml.nvmlSystemGetDriverVersion())}
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
        facts[f"gpu{index}"] = f"{name.decode() if isinstance(name, bytes) else name}, {memory:.0f} GiB"
    return facts
