"""ComfyUI's scaled fp8 form of a weight file, for the loaders' tests (FLUX.1, Z-Image)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FP8_MAX = 448.0  # float8_e4m3fn's largest value


def write_scaled_fp8(source: Path, target: Path, reference: Path) -> None:
    """Write `source`'s 2-D weights as ComfyUI does in a scaled fp8 file (float8 / scale_weight, scale_input, the
    `scaled_fp8` marker) to `target`, and what ComfyUI computes with (weight x scale in bf16) to `reference`."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(2, dtype=torch.float8_e4m3fn)}
    state = load_file(str(source))
    expected = dict(state)
    for key, value in state.items():
        if value.dim() != 2 or not key.endswith(".weight"):
            out[key] = value
            continue
        scale = value.float().abs().max() / FP8_MAX
        stored = (value.float() / scale).to(torch.float8_e4m3fn)
        layer = key.removesuffix(".weight")
        out[key], out[f"{layer}.scale_weight"], out[f"{layer}.scale_input"] = (
            stored,
            scale.reshape(1),
            torch.ones(1),
        )
        expected[key] = (stored.float() * scale).to(torch.bfloat16)
    save_file(out, str(target))
    save_file(expected, str(reference))
