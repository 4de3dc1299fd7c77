"""Mixed precision: which autocast dtype a run gets on its device, and why (the note every run records)."""

from __future__ import annotations

import torch

from engine.config import RunConfig

CPU_WITHOUT_BFLOAT16 = ("AMP off: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), where bfloat16 is emulated "
                        "about 100x slower than float32; training in float32")


def cpu_bfloat16_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); a torch without the probes is trusted."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    answers = [probe() for probe in probes if probe is not None]
    return any(answers) or not answers


def amp_settings(config: RunConfig, device: torch.device) -> tuple[torch.dtype | None, bool, str]:
    """(autocast dtype or None, use a gradient scaler, note for the user)."""
    if not config.use_amp:
        return None, False, "AMP off (float32)"
    if device.type == "cpu" and not cpu_bfloat16_native():
        return None, False, CPU_WITHOUT_BFLOAT16
    if config.amp_dtype == "float16" and device.type == "cuda":
        return torch.float16, True, "AMP float16 with a gradient scaler"
    if device.type == "mps":
        return torch.float16, False, "AMP float16 (MPS)"
    if config.amp_dtype == "float16":
        return torch.bfloat16, False, "AMP bfloat16 (float16 needs CUDA)"
    return torch.bfloat16, False, "AMP bfloat16"
