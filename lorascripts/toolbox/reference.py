"""What a LoRA is checked against: the layers of a real single-file checkpoint, or of a standard SD1.5 / SD2.1 /
SDXL model built on the meta device from its published configuration (no weights, no download, ~1 s).

Layer names follow AUTOMATIC1111's spelling (models/ldm_names.original_layout_shapes): `diffusion_model_...`,
`transformer_text_model_...` (CLIP-L), `model_transformer_resblocks_N_attn` (fused OpenCLIP q/k/v), with
`0_`/`1_` in front of the two SDXL text encoders.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import torch

from ..errors import ModelError

# (single-file prefix, A1111 layer-name prefix) for every weight a LoRA can patch
PREFIXES = (
    ("model.diffusion_model.", "diffusion_model_"),
    ("cond_stage_model.transformer.", "transformer_"),
    ("cond_stage_model.model.", "model_"),
    ("conditioner.embedders.0.transformer.", "0_transformer_"),
    ("conditioner.embedders.1.model.", "1_model_"),
)
FAMILIES = ("sd1", "sd2", "sdxl")


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


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a single-file .safetensors checkpoint, read from its header only."""
    from ..models.files import safetensors_shapes

    return safetensors_shapes(Path(path), "checkpoint")


def checkpoint_family(shapes: dict[str, tuple[int, ...]]) -> str:
    """sd1, sd2 or sdxl from a single file's key layout."""
    from ..models.family import family_from_keys

    family = family_from_keys(list(shapes))
    if family is None:
        raise ModelError(
            "this file has no SD1/SD2/SDXL text-encoder keys; is it a LoRA or a VAE, not a checkpoint?"
        )
    return family.value


def kohya_targets(base: object, with_conv: bool = True) -> list[tuple[str, object]]:
    """(kohya name, Target) for every layer a LoRA (or, with_conv, LoCon) can hold in `base`: the training
    engine's own selection and namer, so tools name layers exactly as training does."""
    from ..network.lora import NetworkSpec, collect_targets
    from ..network.naming import KohyaNamer

    namer = KohyaNamer(base.family.value, base.unet.config)
    spec = NetworkSpec(
        network_type="locon" if with_conv else "lora", rank=4, alpha=4, train_text_encoder=True
    )
    return [(namer.name(t.component, t.path), t) for t in collect_targets(base, spec)]


def _unet_config(family: str) -> dict:
    common = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8}
    if family == "sd2":
        return {
            **common,
            "cross_attention_dim": 1024,
            "attention_head_dim": [5, 10, 20, 20],
            "use_linear_projection": True,
        }
    if family == "sdxl":
        return {
            "sample_size": 128,
            "block_out_channels": [320, 640, 1280],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "transformer_layers_per_block": [1, 2, 10],
            "attention_head_dim": [5, 10, 20],
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        }
    return common


def _text(hidden: int, layers: int, heads: int, inter: int, act: str, projection: int | None = None):  # noqa: ANN202
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        hidden_act=act,
        projection_dim=projection or hidden,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


@lru_cache(maxsize=3)
def meta_base(family: str) -> SimpleNamespace:
    """The standard model of a family as modules on the meta device (`unet`, `text_encoders`, `family`)."""
    from diffusers import UNet2DConditionModel

    from ..models.family import ModelFamily

    if family not in FAMILIES:
        raise ModelError(
            f"unknown base model family {family!r}; choose one of {FAMILIES} or give a checkpoint."
        )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**_unet_config(family))
        if family == "sd1":
            encoders = [_text(768, 12, 12, 3072, "quick_gelu")]
        elif family == "sd2":
            encoders = [_text(1024, 23, 16, 4096, "gelu")]
        else:
            encoders = [_text(768, 12, 12, 3072, "quick_gelu"), _text(1280, 32, 20, 5120, "gelu", 1280)]
    return SimpleNamespace(unet=unet, family=ModelFamily(family), text_encoders=encoders)


@lru_cache(maxsize=3)
def reference_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """A1111 layer name -> weight shape of the standard model of a family."""
    from ..models.ldm_names import original_layout_shapes

    return original_layout_shapes(meta_base(family))
