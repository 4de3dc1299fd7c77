"""`asym-tui doctor`: what this machine can do — device, GPU, CPU, memory, whether AMP and torch.compile
really work here (each probed for a few seconds), and the preset to start from."""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import dataclass

import psutil
import torch

from engine import precision
from engine.monitor import gpu_facts, resolve_device


@dataclass
class Probe:
    name: str
    works: bool
    detail: str  # timing when it works, the reason when it doesn't


def _probe(name: str, action) -> Probe:
    started = time.perf_counter()
    try:
        detail = action()
    except Exception as exc:  # a probe reports failure; it never raises
        return Probe(name, False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
    return Probe(name, True, f"{detail} ({time.perf_counter() - started:.1f} s)")


def _tiny_step(device: torch.device, dtype: torch.dtype) -> str:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 3)).to(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    with torch.autocast(device.type, dtype=dtype):
        output = model(torch.randn(256, 64, device=device))
    if output.dtype != dtype:
        raise RuntimeError(f"autocast produced {output.dtype}, not {dtype}")
    scaler.scale(output.float().square().mean()).backward()
    if not all(torch.isfinite(p.grad).all() for p in model.parameters()):
        raise RuntimeError("non-finite gradients")
    return "forward and backward ran" + (" with a gradient scaler" if scaler.is_enabled() else "")


def _compile_step(device: torch.device) -> str:
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).to(device)
    compiled = torch.compile(model, dynamic=False)
    x = torch.randn(64, 32, device=device)
    compiled(x).sum().backward()
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    return "inductor compiled forward and backward; results match eager"


def apple_chip() -> str:
    try:
        return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def recommended_preset(device: torch.device, chip: str = "") -> str:
    if device.type == "cuda":
        return "cuda"
    if device.type == "mps":
        for generation in ("M3", "M2", "M1"):
            if generation in chip:
                return f"apple-{generation.lower()}"
        return "apple-m2"
    return "optimized"


def diagnose(probe: bool = True) -> dict:
    device, reason = resolve_device("auto")
    memory = psutil.virtual_memory()
    chip = apple_chip() if device.type == "mps" else ""
    facts = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "device_reason": reason,
        "gpu": gpu_facts(),
        "cpu": f"{psutil.cpu_count(logical=False) or '?'} cores / {psutil.cpu_count()} threads "
               f"({platform.processor() or platform.machine()}); torch uses {torch.get_num_threads()} threads",
        "memory": f"{memory.total / 2**30:.1f} GiB total, {memory.available / 2**30:.1f} GiB available",
        "recommended_preset": recommended_preset(device, chip),
        "probes": [],
    }
    if probe:
        if device.type == "cpu" and not precision.cpu_bfloat16_native():
            probes = [Probe("bfloat16 autocast", False, precision.CPU_WITHOUT_BFLOAT16)]
        else:
            probes = [_probe("bfloat16 autocast", lambda: _tiny_step(device, torch.bfloat16))]
        if device.type in ("cuda", "mps"):
            probes.append(_probe("float16 autocast", lambda: _tiny_step(device, torch.float16)))
        else:
            probes.append(Probe("float16 autocast", False, "float16 with a gradient scaler needs CUDA; AMP uses bfloat16 on this device"))
        probes.append(_probe("torch.compile", lambda: _compile_step(device)))
        facts["probes"] = [vars(p) for p in probes]
    return facts
