"""The denoiser's bytes on the training device under `fp8_base` and `blocks_to_swap`, counted on its meta-device
model with the same rules the run applies (models/fp8.py stores the Linear weights of the family's blocks,
models/block_swap.py picks the swapped blocks): nothing is loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from torch import nn

from ..models.block_swap import family_blocks, swapped_blocks


@dataclass(frozen=True)
class DenoiserBytes:
    """Where the frozen denoiser's bytes are during a step."""

    device: int  # resident on the training device (with one swapped block brought in, and one fp8 cast copy)
    swapped: int  # kept in CPU memory by block swap
    swapped_blocks: int


@lru_cache(maxsize=4)
def _meta_model(family: Any, config_json: str) -> nn.Module:
    return family.meta_denoiser(json.loads(config_json))


def _bytes(module: nn.Module, fp8_ids: set[int], item: int) -> int:
    return sum(p.numel() * (1 if id(p) in fp8_ids else item) for p in module.parameters())


def denoiser_bytes(family: Any, config: dict[str, Any], *, fp8: bool, swap: int, item: int) -> DenoiserBytes:
    """The denoiser's device and CPU bytes with fp8 storage of its blocks' Linear weights and `swap` blocks
    swapped, its other weights `item` bytes each."""
    model = _meta_model(family, json.dumps(config, sort_keys=True, default=str))
    fp8_ids: set[int] = set()
    largest_cast = 0
    if fp8:
        for block in family_blocks(family, model):
            for layer in block.modules():
                if isinstance(layer, nn.Linear):
                    fp8_ids.add(id(layer.weight))
                    largest_cast = max(
                        largest_cast, layer.weight.numel() * item
                    )  # the compute copy of one matmul
    total = _bytes(model, fp8_ids, item)
    blocks = swapped_blocks(family, model, swap) if swap else []
    sizes = [_bytes(block, fp8_ids, item) for block in blocks]
    swapped = sum(sizes)
    device = total - swapped + (max(sizes) if sizes else 0) + largest_cast
    return DenoiserBytes(device=device, swapped=swapped, swapped_blocks=len(blocks))
