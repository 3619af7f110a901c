"""ComfyUI's "scaled fp8" weight files, dequantised for every family's loader.

Such a file stores a Linear weight as float8 with one scale beside it (`<layer>.scale_weight`, a `scaled_fp8`
marker tensor and `<layer>.scale_input` in ComfyUI's format; `<layer>.weight_scale` + `<layer>.input_scale` in
its newer per-layer quant format). ComfyUI computes with `weight * scale` (its scaled-fp8 ops), so the weights
are that product; loading the float8 tensor alone would silently give a model off by the scale. Written here
because diffusers' single-file converters do not read these files. Only a per-tensor or per-row scale is a
plain product; block-scaled formats (NVFP4, MXFP8) are refused by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import ModelError

logger = logging.getLogger(__name__)
WEIGHT_SCALES = (".scale_weight", ".weight_scale")
# what only ComfyUI's fp8 matmul reads (input scales, the format marker, per-layer quant settings)
QUANT_ONLY = (".scale_input", ".input_scale", ".comfy_quant")
MARKER = "scaled_fp8"
# ComfyUI computes the product in the model's compute dtype; bf16 keeps a 12 B transformer's copy at 2 bytes a weight
DEQUANT_DTYPE = torch.bfloat16


def is_scaled(keys: set[str] | list[str]) -> bool:
    """Whether a file with these tensor names keeps scales beside its weights."""
    return any(k == MARKER or k.endswith(WEIGHT_SCALES) for k in keys)


def _per_row(scale: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """The scale shaped to multiply `weight`: one value, or one per output row; None for block scales."""
    if scale.numel() == 1:
        return scale.reshape(())
    if weight.dim() >= 1 and scale.numel() == weight.shape[0]:
        return scale.reshape(weight.shape[0], *([1] * (weight.dim() - 1)))
    return None


def dequantise(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """`state` with every scaled weight replaced by `weight * scale` (bf16) and the scale tensors dropped; a
    file without scales comes back as it is."""
    if not is_scaled(list(state)):
        return state
    out = {k: v for k, v in state.items() if k != MARKER and not k.endswith(QUANT_ONLY + WEIGHT_SCALES)}
    count = 0
    for key, scale in state.items():
        if not key.endswith(WEIGHT_SCALES):
            continue
        weight_key = key[: key.rfind(".")] + ".weight"
        weight = out.get(weight_key)
        if weight is None:
            raise ModelError(
                f"{path.name}: {key} scales a weight the file does not have ({weight_key}); the file is damaged "
                "or of a quantised format this trainer does not read. Use the bf16 file."
            )
        shaped = _per_row(scale, weight)
        if shaped is None:
            raise ModelError(
                f"{path.name} is block-quantised ({key} has {scale.numel()} scales for a weight of shape "
                f"{tuple(weight.shape)}), a format this trainer does not read. Use the bf16 file (or a plain / "
                "scaled fp8 one) and `fp8_base: true` for the memory."
            )
        out[weight_key] = (weight.to(torch.float32) * shaped.to(torch.float32)).to(DEQUANT_DTYPE)
        count += 1
    logger.info(
        "%s: %d scaled fp8 weights dequantised (weight x scale, as ComfyUI computes them)", path.name, count
    )
    return out
