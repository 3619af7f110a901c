"""Memory presets for diffusion transformers on 8-24 GB cards (`memory_preset`), after the published FLUX.1
recipes (kohya sd-scripts, shared/DIT_FAMILIES.md "Memory (published)"): fp8 base weights on 24 GB; block swap
from 16 GB down (12 GB: `blocks_to_swap 16` + 8-bit AdamW, 10 GB: 22, 8 GB: 28). Every preset trains with gradient
checkpointing and cached text-encoder outputs (T5 frozen and out of memory). `auto` asks the pre-flight estimate
which is the first that fits the device: no preset when the config fits as it is.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from typing import Any

from ..config import TrainConfig

logger = logging.getLogger(__name__)

MEMORY_PRESETS: dict[str, dict[str, Any]] = {
    "24gb": {"fp8_base": True, "blocks_to_swap": 0, "optimizer": "adamw"},
    "16gb": {"fp8_base": True, "blocks_to_swap": 8, "optimizer": "adamw"},
    "12gb": {"fp8_base": True, "blocks_to_swap": 16, "optimizer": "adamw8bit"},
    "10gb": {"fp8_base": True, "blocks_to_swap": 22, "optimizer": "adamw8bit"},
    "8gb": {"fp8_base": True, "blocks_to_swap": 28, "optimizer": "adamw8bit"},
}
COMMON = {"gradient_checkpointing": True, "train_text_encoder": False}
FIT = 0.9  # the share of the device's memory a preset's estimate may use (the estimate's own "fits")


def with_preset(cfg: TrainConfig, name: str) -> TrainConfig:
    """`cfg` with the preset's settings; fp8_base / blocks_to_swap set in the config win. Without bitsandbytes
    the 8-bit optimizer becomes adamw (logged: the estimate then counts fp32 states)."""
    values = {**COMMON, **MEMORY_PRESETS[name], "memory_preset": name}
    for key in ("fp8_base", "blocks_to_swap"):
        if getattr(cfg, key) is not None:
            values.pop(key)
    if values["optimizer"] == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        logger.warning("memory_preset %s: bitsandbytes is not installed, so adamw keeps fp32 states", name)
        values["optimizer"] = "adamw"
    if cfg.optimizer not in ("adamw", "adamw8bit"):
        values.pop("optimizer")  # a choice of its own (prodigy, adafactor) stays
    if cfg.cache_text_encoder_outputs in (None, "off"):
        values["cache_text_encoder_outputs"] = "memory"
    return dataclasses.replace(cfg, **values)


def resolve_memory_preset(
    cfg: TrainConfig, device: str, memory_limit_bytes: int | None = None
) -> tuple[TrainConfig, list[tuple[str, Any]]]:
    """The config with its memory preset applied (`auto`: the first of none, 24gb ... 8gb whose estimate fits
    `memory_limit_bytes`, default the device's memory), and the estimates tried [(name, RunEstimate)]."""
    if cfg.memory_preset == "off":
        return cfg, []
    if cfg.memory_preset != "auto":
        return with_preset(cfg, cfg.memory_preset), []
    from .estimate import estimate_run

    tried = []
    for name in ("off", *MEMORY_PRESETS):
        candidate = dataclasses.replace(cfg, memory_preset="off") if name == "off" else with_preset(cfg, name)
        try:
            estimate = estimate_run(candidate, device=device, memory_limit_bytes=memory_limit_bytes)
        except Exception as exc:  # noqa: BLE001 - advice only, as the run's own estimate; the load reports
            logger.warning("memory_preset auto: no estimate for %s (%s); no preset applied", name, exc)
            return dataclasses.replace(cfg, memory_preset="off"), tried
        tried.append((name, estimate))
        limit = estimate.memory_limit_bytes
        if limit is None or estimate.peak_memory_bytes <= FIT * limit:
            logger.info("memory_preset auto: %s (%s)", name, estimate.short())
            return candidate, tried
    logger.warning("memory_preset auto: even the 8gb preset does not fit the estimate; using it")
    return candidate, tried
