"""Measured dense-matmul peak of this machine (the denominator of model-FLOPs utilisation and of the estimate).

Vendor peak figures are not what a CPU sustains under torch (AMX/AVX-512 clocks, thread count, memory), so
the peak is measured: the best of a few large square matmuls over about a second, cached per machine, dtype
and thread count under the user cache dir so that later runs read it instantly.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def user_cache_dir() -> Path:
    """lora-scripts' per-user cache: $LORA_SCRIPTS_CACHE, else $XDG_CACHE_HOME/lora-scripts, else ~/.cache/..."""
    if os.environ.get("LORA_SCRIPTS_CACHE"):
        return Path(os.environ["LORA_SCRIPTS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lora-scripts"


def _machine_key(dtype: torch.dtype, device: str) -> str:
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = _cpu_name()
    return f"{name}|{device}|{dtype}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _measure(dtype: torch.dtype, device: str, seconds: float) -> float:
    # 4096 on CPU too: 2048-wide bf16 products on this 2-core AMX VM measured 0.9-2.2 TFLOP/s from one run to the
    # next (short turbo bursts), 4096-wide ones a steady 0.76-0.79, the rate a long training step actually sees
    size = 4096
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.matmul(a, b)  # warm-up: kernel selection, AMX tile configuration, page faults
    sync()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        start = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        sync()
        elapsed = time.perf_counter() - start
        best = max(best, 4 * 2.0 * size**3 / elapsed)
    return best


# dense bf16 matmul of a consumer card (RTX 4090 class, 165 TFLOP/s), for estimates of a GPU that is not here
NOMINAL_CUDA_PEAK = 165e12


def matmul_peak(
    dtype: torch.dtype, device: str = "cpu", *, seconds: float = 1.5, refresh: bool = False
) -> float:
    """Sustained dense-matmul FLOP/s for `dtype` on `device` (measured once, then read from the cache)."""
    if device == "cuda" and not torch.cuda.is_available():
        # planning for a GPU this machine does not have (`auto` presets, the CLI's estimate): a nominal figure
        logger.info("no CUDA device here: the estimate assumes %.0f TFLOP/s", NOMINAL_CUDA_PEAK / 1e12)
        return NOMINAL_CUDA_PEAK
    key = _machine_key(dtype, device)
    path = user_cache_dir() / "matmul_peak-v2.json"  # v2: 4096-wide products (v1 figures were burst rates)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if not refresh and isinstance(cached.get(key), (int, float)):
        return float(cached[key])
    with torch.no_grad():
        peak = _measure(dtype, device, seconds)
    logger.info("measured %s matmul peak on %s: %.2f TFLOP/s", dtype, device, peak / 1e12)
    cached[key] = peak
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:  # a read-only home only costs the measurement next time
        logger.debug("matmul peak not cached (%s)", exc)
    return peak
