"""A kohya Z-Image LoRA in ai-toolkit's keys and back: `diffusion_model.<diffusers module>.lora_A/lora_B.weight`
(e.g. `diffusion_model.layers.0.attention.to_q`), the scale alpha/rank folded into lora_B (ai-toolkit writes no
alpha). ComfyUI maps these through `z_image_to_diffusers` (to_q/to_k/to_v as row slices of the fused qkv), and
diffusers' `ZImageLoraLoaderMixin` strips the prefix (`_convert_non_diffusers_z_image_lora_to_diffusers`).

The fused `attention_qkv` module splits by the rows of its up with the same down (exact for our block-diagonal
files and kohya's shared-rank ones alike); back to kohya the three parts fuse again (FLUX's rule, flux1/diffusers_lora.py).
"""

from __future__ import annotations

import re

import torch

from ..flux1.diffusers_lora import kohya_modules as flux_kohya_modules
from .lora_layout import BLOCK, QKV_PARTS

PREFIX = "diffusion_model."
KOHYA_RX = re.compile(r"^lora_unet_(layers|noise_refiner|context_refiner)_(\d+)_(.+)$")
KEY_RX = re.compile(r"^diffusion_model\.(layers|noise_refiner|context_refiner)\.(\d+)\.(.+)$")
# original name inside a block with `_` -> diffusers path, for the layers that map one to one
DIRECT = {entry[0].replace(".", "_"): path for path, entry in BLOCK.items() if "__" not in entry[0]}
QKV = {part: f"attention.to_{part}" for part in QKV_PARTS}


def diffusers_names(name: str, down: torch.Tensor, up: torch.Tensor) -> list[tuple[str, torch.Tensor]] | None:
    """(ai-toolkit module key, its lora_B) for one kohya module; the down (lora_A) is shared. None: no layer."""
    match = KOHYA_RX.match(name)
    if not match:
        return None
    block, index, inner = match.groups()
    where = f"{PREFIX}{block}.{index}."
    if inner == "attention_qkv":
        return [(where + QKV[p], rows) for p, rows in zip(QKV_PARTS, torch.chunk(up, 3))]
    path = DIRECT.get(inner)
    return None if path is None else [(where + path, up)]


def kohya_part(key: str) -> tuple[str, int, int] | None:
    """(kohya module, part index, parts) of one diffusers Z-Image module key; None: no such layer."""
    if key.startswith("transformer."):  # diffusers' own PEFT prefix for the pipeline's transformer
        key = PREFIX + key.removeprefix("transformer.")
    match = KEY_RX.match(key)
    if not match:
        return None
    block, index, path = match.groups()
    base = f"lora_unet_{block}_{index}_"
    for i, part in enumerate(QKV_PARTS):
        if path == QKV[part]:
            return base + "attention_qkv", i, 3
    for inner, direct in DIRECT.items():
        if path == direct:
            return base + inner, 0, 1
    return None


def kohya_modules(
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """kohya modules {name: (down, up)} from ai-toolkit/diffusers modules {key: (lora_A, scaled lora_B)}, and the
    keys with no Z-Image layer."""
    return flux_kohya_modules(modules, kohya_part)
