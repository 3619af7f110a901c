"""Mixed precision: what `mixed_precision` means on this device, for image and text training alike."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class Precision:
    """Resolved mixed-precision mode and the dtype frozen weights are stored in."""

    mode: str  # "no", "bf16" or "fp16" (accelerate's names)
    weight_dtype: torch.dtype

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls are fast on CPUs with AVX512-BF16 or AMX; elsewhere they are emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_precision(device_type: str, overhead_bound: bool = False) -> str:
    """What `mixed_precision: auto` means on this device.

    bf16 where the hardware has it, except on CPU for overhead-bound models (the pre-flight estimate says so):
    a tiny U-Net's step is thousands of small operators, and under bf16 autocast each one also casts its
    inputs, which made the 64 px pipeline's step 2x slower than fp32; large models are compute-bound and gain.
    """
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() and not overhead_bound else "no"


def resolve_precision(cfg: Any, device: torch.device, overhead_bound: bool = False) -> Precision:
    """auto -> auto_precision(); fp16 only on CUDA (it is ~500x slower on CPU)."""
    mode = cfg.mixed_precision
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError(
            "mixed_precision: fp16 needs a CUDA GPU; on this device it would be hundreds of times slower. "
            "Use bf16 (or no)."
        )
    if mode == "auto":
        mode = auto_precision(device.type, overhead_bound)
        logger.info("mixed_precision auto -> %s on %s", mode, device.type)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)
    return Precision(mode, dtype)
