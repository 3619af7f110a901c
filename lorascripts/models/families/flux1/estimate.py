"""What the pre-flight estimate needs of a FLUX.1 model without loading it: configs and parameter counts from
file headers (the loader's own shape rules, layout.py), and the meta transformer / inputs of one step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .find import CONFIG_KEYS, PARTS
from .layout import ALL_IN_ONE, t5_config, transformer_config, transformer_prefix, vae_config

if TYPE_CHECKING:
    from ....perf.configs import Header, ModelShapes, PartsRead
    from ..base import Family

# FLUX.1's published parts, for a part whose file cannot be found before loading
CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}  # fmt: skip
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
          "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False}  # fmt: skip
# parameters and the dtype of the published file (ae.safetensors is fp32, clip_l and t5xxl_fp16 fp16)
PUBLISHED = {"vae": (83_819_683, "F32"), "clip_l": (123_060_480, "F16"), "t5": (4_762_310_656, "F16")}


def sub_shapes(shapes: dict[str, tuple[int, ...]], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}


def count_params(shapes: dict[str, tuple[int, ...]]) -> int:
    # T5 files may hold the tied embedding under both names; the model has it once
    tied = "encoder.embed_tokens.weight" if "shared.weight" in shapes else ""
    return sum(math.prod(v) for k, v in shapes.items() if k != tied)


def part_shapes(
    header: Header, components: dict[str, str | None], read: PartsRead
) -> dict[str, dict[str, tuple[int, ...]]]:
    """The VAE's, CLIP-L's and T5's tensor shapes as the load will read them: the config's file, else the
    checkpoint's own (all-in-one), else the file found beside it (find.py); {} for a part not found."""
    inside = {part: sub_shapes(header.shapes, ALL_IN_ONE[part]) for part in PARTS}
    found = {}
    for part in PARTS:
        given = components.get(CONFIG_KEYS[part])
        if inside[part] and not given:
            found[part] = inside[part]
            continue
        found[part] = read.part(PARTS[part], given, header.path, "FLUX", PUBLISHED[part])
    return found


def checkpoint_shapes(family: Family, header: Header, components: dict[str, str | None]) -> ModelShapes:
    from ....perf.configs import PartsRead
    from ..sd.single_file import text_config

    read = PartsRead()
    read.add(header)
    transformer = sub_shapes(header.shapes, transformer_prefix(set(header.shapes)) or "")
    parts = part_shapes(header, components, read)
    vae, clip, t5 = parts["vae"], parts["clip_l"], parts["t5"]
    vae_cfg = vae_config(vae) if vae else {**vae_config_default(), "sample_size": 1024}
    texts = [text_config(clip, "", "clip_l", {}, 0) if clip else CLIP_L, t5_config(t5) if t5 else T5_XXL]
    return read.model_shapes(
        family,
        denoiser=transformer_config(transformer),
        vae=vae_cfg,
        text_encoders=texts,
        params={
            "unet": count_params(transformer),
            "vae": count_params(vae) or PUBLISHED["vae"][0],
            "text": (count_params(clip) or PUBLISHED["clip_l"][0]) + (count_params(t5) or PUBLISHED["t5"][0]),
        },
    )


def vae_config_default() -> dict[str, Any]:
    """FLUX.1's VAE (diffusers' vae/config.json of the dev repo)."""
    return {"block_out_channels": [128, 256, 512, 512], "latent_channels": 16, "layers_per_block": 2,
            "scaling_factor": 0.3611, "shift_factor": 0.1159}  # fmt: skip


def folder_shapes(family: Family, path: Path) -> ModelShapes:
    from ....perf.configs import ModelShapes, folder_params, read_config

    names = ("transformer", "vae", "text_encoder", "text_encoder_2")
    sizes = {name: folder_params(path / name) for name in names}
    return ModelShapes(
        family=family,
        denoiser=read_config(path / "transformer" / "config.json"),
        vae=read_config(path / "vae" / "config.json"),
        text_encoders=[read_config(path / d / "config.json") for d in names[2:]],
        params={
            "unet": sizes["transformer"][0],
            "vae": sizes["vae"][0],
            "text": sizes["text_encoder"][0] + sizes["text_encoder_2"][0],
        },
        file_bytes=sum(b for _, b in sizes.values()),
    )


def meta_transformer(config: dict[str, Any]) -> nn.Module:
    from diffusers import FluxTransformer2DModel

    from .load import fuse_projections

    clean = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        return fuse_projections(FluxTransformer2DModel(**clean))


def transformer_inputs(
    config: dict[str, Any], batch: int, latent_hw: tuple[int, int], text_len: int, dtype: torch.dtype
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Keyword inputs of one transformer step on the meta device (packed 2x2 latents require grad); the output
    is diffusers' `Transformer2DModelOutput` (`.sample`), as perf/ reads it."""
    meta = {"device": "meta", "dtype": dtype}
    tokens = (latent_hw[0] // 2) * (latent_hw[1] // 2)
    kwargs = {
        "hidden_states": torch.empty(
            batch, tokens, config.get("in_channels", 64), **meta, requires_grad=True
        ),
        "encoder_hidden_states": torch.empty(
            batch, text_len, config.get("joint_attention_dim", 4096), **meta
        ),
        "pooled_projections": torch.empty(batch, config.get("pooled_projection_dim", 768), **meta),
        "timestep": torch.empty(batch, **meta),
        "img_ids": torch.empty(tokens, 3, **meta),
        "txt_ids": torch.empty(text_len, 3, **meta),
        "guidance": torch.empty(batch, **meta) if config.get("guidance_embeds") else None,
    }
    return (), kwargs


def meta_text_encoder(config: dict[str, Any], batch: int, text_len: int) -> tuple[nn.Module, torch.Tensor]:
    """CLIP-L or T5 (by its config) on the meta device, and a batch of token ids for it."""
    from ..sd.estimate import meta_text_encoder as meta_clip

    if "d_model" not in config:
        return meta_clip(config, batch, text_len)
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        model = T5EncoderModel(T5Config(**{k: v for k, v in config.items() if not k.startswith("_")}))
    return model, torch.zeros(batch, text_len, dtype=torch.long, device="meta")
