"""The run's memory options on the loaded, frozen denoiser: fp8 base weights (models/fp8.py) and block swap
(models/block_swap.py). The family only names its block lists (`Family.swap_blocks`); the mechanisms are shared.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import ConfigError
from ..models.block_swap import BlockSwapper, family_blocks, swapped_blocks
from ..models.fp8 import fp8_bytes, store_fp8

logger = logging.getLogger(__name__)
GIB = 2**30


def apply_memory_options(
    cfg: Any, base: Any, device: torch.device, dtype: torch.dtype
) -> BlockSwapper | None:
    """fp8 storage and block swap on `base.denoiser` as the config asks (before it is placed on the device);
    the swapper, or None without swap. ConfigError when the family has no blocks for them."""
    family, denoiser = base.family, base.denoiser
    if cfg.memory_preset != "off" and not family.swap_blocks:
        raise ConfigError(
            f"memory_preset: {cfg.memory_preset} is for diffusion transformers such as FLUX.1, not {family.label}; "
            "set memory_preset: off (gradient_checkpointing and a smaller batch_size save memory there)."
        )
    if cfg.fp8_base:
        if not family.swap_blocks:
            raise ConfigError(
                f"fp8_base: {family.label} is not supported (fp8 base weights are for diffusion transformers such "
                "as FLUX.1); set fp8_base: false."
            )
        count = store_fp8(denoiser, family_blocks(family, denoiser), dtype)
        logger.info(
            "fp8 base: %d Linear weights of the %s blocks stored in float8_e4m3fn (%.2f GiB), computed in %s",
            count,
            family.label,
            fp8_bytes(denoiser) / GIB,
            str(dtype).removeprefix("torch."),
        )
    if not cfg.blocks_to_swap:
        return None
    swapper = BlockSwapper(swapped_blocks(family, denoiser, cfg.blocks_to_swap), device)
    logger.info(
        "block swap: %d of the %s blocks (%.2f GiB) stay in CPU memory and come to %s one at a time",
        len(swapper.blocks),
        family.label,
        swapper.swapped_bytes() / GIB,
        device.type,
    )
    return swapper
