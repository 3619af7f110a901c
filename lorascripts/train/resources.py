"""The machine side of a run: the pre-flight estimate and the CPU thread count it leads to."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import torch

from ..config import TrainConfig

if TYPE_CHECKING:
    from ..perf.estimate import RunEstimate

logger = logging.getLogger(__name__)


def run_estimate(
    cfg: TrainConfig, device_type: str, overhead_bound: bool | None = None, base_rss: int | None = None
) -> RunEstimate | None:
    """The pre-flight estimate (from headers; before anything is loaded). Advice only: never fails a run."""
    from ..perf.estimate import estimate_run

    try:
        return estimate_run(cfg, device=device_type, overhead_bound=overhead_bound, base_rss_bytes=base_rss)
    except Exception as exc:  # noqa: BLE001 - the model load reports real problems with the checkpoint
        logger.info("no pre-flight estimate for %s (%s)", cfg.base_model, exc)
        return None


def _auto_threads(device_type: str, overhead_bound: bool) -> int:
    """0 (torch's default), or 1 where more threads only wait on each other.

    Two cases, both measured: a tiny model's operators take microseconds, and splitting each over OpenMP
    threads costs more in barriers than it gains; and on a machine already busier than its cores (load
    average >= 2x cores) every parallel region waits for a descheduled thread: there, SD1.5 at 256 px took
    33-36 s/step on 2 threads and 5-21 s on one, the 64 px pipeline 1.6-6 s against 0.22-0.48 s.
    """
    if device_type != "cpu":
        return 0
    cores = os.cpu_count() or 1
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= 2 * cores
    return 1 if overhead_bound or busy else 0


def set_threads(cfg: TrainConfig, device_type: str, overhead_bound: bool) -> int | None:
    """Apply cpu_threads (0: _auto_threads); returns the count to restore at the end, if it was changed."""
    wanted = cfg.cpu_threads or _auto_threads(device_type, overhead_bound)
    if not wanted or wanted == torch.get_num_threads():
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(wanted)
    logger.info("torch CPU threads: %d (was %d)", wanted, before)
    return before
