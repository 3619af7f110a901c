"""FLUX.1 layers as ComfyUI and Forge name them (BFL's module names), for the key self-test and the toolbox.

A kohya name `lora_unet_double_blocks_0_img_attn_qkv` patches the BFL layer `double_blocks.0.img_attn.qkv`;
`lora_te1_...` patches CLIP-L's layer of the same name. The single blocks' `linear1` is one layer there (q, k, v
and the MLP input), two in diffusers' model (see lora_layout.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..fused_lora import layer_shapes
from .lora_layout import FluxNamer, text_targets, transformer_targets

logger = logging.getLogger(__name__)
CLIP_L_PREFIX = "text_encoders.clip_l.transformer."  # CLIP-L inside ComfyUI's all-in-one checkpoint
ALL = {"q_proj", "k_proj", "v_proj", "out_proj", "ff", "fc1", "fc2", "mod"}


def model_layers(base: Any) -> dict[str, tuple[int, ...]]:
    """kohya base name -> the weight shape of the layer it patches (linear1: both diffusers parts stacked)."""
    targets = transformer_targets(base.denoiser, ALL) + text_targets(base.text_encoders[0], ALL)
    return layer_shapes(targets, FluxNamer().name)


def resolve_layer(lora_name: str, layers: dict[str, tuple[int, ...]]) -> tuple[str | None, str]:
    """(the layer this kohya name patches, "") — FLUX has no WebUI-side fused attention sets to complete."""
    return (lora_name if lora_name in layers else None), ""


def checkpoint_layers(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """kohya base name -> (key in a BFL-layout file, weight shape) of every block Linear, and of CLIP-L's layers
    when the file holds it (ComfyUI's all-in-one checkpoint)."""
    from .layout import transformer_prefix

    prefix = transformer_prefix(set(shapes)) or ""
    out = {}
    for key, shape in shapes.items():
        inner = key[len(prefix) :]
        if (
            key.startswith(prefix)
            and inner.startswith(("double_blocks.", "single_blocks."))
            and len(shape) == 2
        ):
            out["lora_unet_" + inner.removesuffix(".weight").replace(".", "_")] = (key, shape)
        elif key.startswith(CLIP_L_PREFIX + "text_model.encoder.layers.") and len(shape) == 2:
            out["lora_te1_" + key[len(CLIP_L_PREFIX) :].removesuffix(".weight").replace(".", "_")] = (
                key,
                shape,
            )
    return out


def clip_l_shapes(checkpoint: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """CLIP-L's shapes (all-in-one keys) for a transformer-only file, from the clip_l file the loader would use;
    none when the file holds CLIP-L itself or none is found (its te1 modules are then reported as dropped)."""
    from ....errors import ModelError
    from ...files import safetensors_shapes
    from .find import find_part

    if any(k.startswith(CLIP_L_PREFIX) for k in shapes):
        return {}
    try:
        clip = find_part("clip_l", None, checkpoint)
    except ModelError as exc:
        logger.info("CLIP-L layers not checked: %s", exc)
        return {}
    return {CLIP_L_PREFIX + k: v for k, v in safetensors_shapes(clip, "CLIP-L text encoder").items()}


def reference_base(family: Any) -> Any:
    """FLUX.1-dev's transformer and CLIP-L on the meta device (the toolbox's view without a file)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..base import BaseModel
    from .estimate import CLIP_L, meta_transformer

    dev = {"num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
           "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
           "axes_dims_rope": (16, 56, 56), "in_channels": 64}  # fmt: skip
    with torch.device("meta"):
        clip = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    return BaseModel(
        family, meta_transformer(dev), None, [clip], [], None, "flow", "flux1", "FLUX.1-dev", 1024
    )
