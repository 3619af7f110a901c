"""Z-Image layers as ComfyUI names them (the original module names with `_`: fused `attention_qkv`), for the key
self-test and the toolbox; and the family's reference model (Z-Image's published transformer on the meta device)."""

from __future__ import annotations

from typing import Any

import torch

from ..fused_lora import layer_shapes
from .layout import transformer_prefix
from .lora_layout import ZImageNamer, transformer_targets

ALL = {"q_proj", "k_proj", "v_proj", "out_proj", "ff", "mod"}
# Z-Image (Turbo and Base): diffusers' transformer/config.json of Tongyi-MAI/Z-Image-Turbo
PUBLISHED = {"dim": 3840, "n_layers": 30, "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30,
             "cap_feat_dim": 2560, "in_channels": 16, "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
             "rope_theta": 256.0, "t_scale": 1000.0}  # fmt: skip


def model_layers(base: Any) -> dict[str, tuple[int, ...]]:
    """kohya base name -> the weight shape of the layer it patches (qkv: q, k and v stacked)."""
    return layer_shapes(transformer_targets(base.denoiser, ALL), ZImageNamer().name)


def checkpoint_layers(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """kohya base name -> (key in an original-layout transformer file, weight shape) of every block Linear."""
    prefix = transformer_prefix(set(shapes)) or ""
    out = {}
    for key, shape in shapes.items():
        inner = key[len(prefix) :]
        if (
            key.startswith(prefix)
            and inner.startswith(("layers.", "noise_refiner.", "context_refiner."))
            and inner.endswith(".weight")
            and len(shape) == 2
        ):
            out["lora_unet_" + inner.removesuffix(".weight").replace(".", "_")] = (key, shape)
    return out


def meta_transformer(config: dict[str, Any]) -> torch.nn.Module:
    from diffusers import ZImageTransformer2DModel

    clean = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        return ZImageTransformer2DModel(**clean)


def reference_base(family: Any) -> Any:
    """Z-Image's transformer on the meta device (the toolbox's view without a file); no text-encoder LoRA."""
    from ..base import BaseModel

    return BaseModel(
        family, meta_transformer(PUBLISHED), None, [], [], None, "flow", "zimage", "Z-Image", 1024
    )
