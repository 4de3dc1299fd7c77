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


@dataclass
class Reading:
    """One sample of utilisation and memory; None means N/A."""

    label: str  # "GPU" or "CPU"
    utilisation: float | None  # percent
    memory_used_mb: float | None  # device memory (GPU) or system memory in use (CPU)
    memory_total_mb: float | None
    peak_allocated_mb: float | None  # torch's peak device allocation (GPU) or process RSS (CPU)


class DeviceMonitor:
    def __init__(self, device: torch.device):
        self.device = device
        self.process = psutil.Process(os.getpid())
        self.handle = self._nvml_handle() if device.type == "cuda" else None
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    @_safe()
    def _nvml_handle(self):
        import pynvml

        pynvml.nvmlInit()
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def read(self) -> Reading:
        if self.device.type == "cuda":
            return Reading("GPU", self._gpu_utilisation(), *self._gpu_memory(), self._peak_cuda())
        if self.device.type == "mps":
            return Reading("GPU", None, self._mps_memory(), None, self._mps_memory())
        memory = psutil.virtual_memory()
        return Reading("CPU", psutil.cpu_percent(interval=None), (memory.total - memory.available) / 2**20, memory.total / 2**20, self._rss())

    @_safe()
    def _gpu_utilisation(self) -> float:
        import pynvml

        return float(pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    @_safe(default=(None, None))
    def _gpu_memory(self) -> tuple[float, float]:
        import pynvml

        info = pynvml.nvmlDeviceGetMemoryInfo(self.handle)
        return info.used / 2**20, info.total / 2**20

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


def format_reading(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "N/A" if value is None else f"{value:,.{digits}f}{unit}"
