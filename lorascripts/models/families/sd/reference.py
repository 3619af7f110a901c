"""The standard SD1.5 / SD2.1 / SDXL models on the meta device, from their published configurations (no weights,
no download, ~1 s), and the layer names of original-layout single files: what the toolbox checks LoRAs against.

Layer names follow AUTOMATIC1111's spelling (ldm_names.original_layout_shapes): `diffusion_model_...`,
`transformer_text_model_...` (CLIP-L), `model_transformer_resblocks_N_attn` (fused OpenCLIP q/k/v), with
`0_`/`1_` in front of the two SDXL text encoders.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch

from ..base import BaseModel

if TYPE_CHECKING:
    from .family import StableDiffusionFamily

# (single-file prefix, A1111 layer-name prefix) for every weight a LoRA can patch
PREFIXES = (
    ("model.diffusion_model.", "diffusion_model_"),
    ("cond_stage_model.transformer.", "transformer_"),
    ("cond_stage_model.model.", "model_"),
    ("conditioner.embedders.0.transformer.", "0_transformer_"),
    ("conditioner.embedders.1.model.", "1_model_"),
)


def layer_keys(keys_and_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """A1111 layer name -> (single-file key, weight shape) for every Linear/Conv weight of a checkpoint."""
    layers: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape in keys_and_shapes.items():
        if len(shape) < 2 or not key.endswith(("weight", "in_proj_weight")):
            continue
        for prefix, head in PREFIXES:
            if key.startswith(prefix):
                rest = key[len(prefix) :].removesuffix(".in_proj_weight").removesuffix(".weight")
                layers[head + rest.replace(".", "_")] = (key, tuple(shape))
                break
    return layers


def _text(spec: dict[str, Any]) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    projection = spec.get("projection")
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=spec["hidden"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        intermediate_size=spec["inter"],
        hidden_act=spec["act"],
        projection_dim=projection or spec["hidden"],
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


@lru_cache(maxsize=4)
def meta_base(family: StableDiffusionFamily) -> BaseModel:
    """The family's standard model with its modules on the meta device (no scheduler, VAE or tokenizers)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**family.reference_unet)
        encoders = [_text(spec) for spec in family.reference_texts]
    return BaseModel(
        family, unet, None, encoders, [], None, "epsilon", "", family.name, family.default_resolution
    )
