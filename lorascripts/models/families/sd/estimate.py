"""What the pre-flight estimate needs of an SD model without loading it: configs and parameter counts from the
single file's header (the loader's own shape rules, single_file.py) or a diffusers folder's JSON, and the meta
modules and dummy inputs of one step for the FLOP/activation count (perf/flops.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .single_file import ARCH_KEY, text_config, unet_config, vae_config

if TYPE_CHECKING:
    from ....perf.configs import Header, ModelShapes
    from .family import StableDiffusionFamily


def _count(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    return sum(math.prod(v) for k, v in shapes.items() if k.startswith(prefix))


def checkpoint_shapes(family: StableDiffusionFamily, header: Header) -> ModelShapes:
    from ....perf.configs import ModelShapes

    shapes, metadata = header.shapes, header.metadata
    arch = json.loads(metadata.get(ARCH_KEY, "{}"))
    family.complete_arch(arch, shapes)
    layouts = family.text_layouts
    texts = [text_config(shapes, prefix, layout, arch, i) for i, (prefix, layout) in enumerate(layouts)]
    return ModelShapes(
        family=family,
        denoiser=unet_config(shapes, family, arch),
        vae=vae_config(shapes, family, arch),
        text_encoders=texts,
        params={
            "unet": _count(shapes, "model.diffusion_model."),
            "vae": _count(shapes, "first_stage_model."),
            "text": sum(_count(shapes, prefix) for prefix, _ in layouts),
        },
        file_bytes=header.file_bytes,
        single_file=True,
    )


def folder_shapes(family: StableDiffusionFamily, path: Path) -> ModelShapes:
    from ....perf.configs import ModelShapes, folder_params, read_config

    text_dirs = [d for d in ("text_encoder", "text_encoder_2") if (path / d / "config.json").is_file()]
    sizes = {name: folder_params(path / name) for name in ("unet", "vae", *text_dirs)}
    return ModelShapes(
        family=family,
        denoiser=read_config(path / "unet" / "config.json"),
        vae=read_config(path / "vae" / "config.json"),
        text_encoders=[read_config(path / d / "config.json") for d in text_dirs],
        params={
            "unet": sizes["unet"][0],
            "vae": sizes["vae"][0],
            "text": sum(sizes[d][0] for d in text_dirs),
        },
        file_bytes=sum(b for _, b in sizes.values()),
    )


def meta_unet(config: dict[str, Any]) -> nn.Module:
    from diffusers import UNet2DConditionModel

    clean = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        return UNet2DConditionModel(**clean)


def unet_inputs(
    config: dict[str, Any], batch: int, latent_hw: tuple[int, int], text_len: int, dtype: torch.dtype
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword inputs of one U-Net step on the meta device; the latents require grad so that
    autograd runs the backward through every frozen layer, as the LoRA layers make it do in a real step."""
    meta = {"device": "meta", "dtype": dtype}
    sample = torch.empty(batch, config.get("in_channels", 4), *latent_hw, **meta, requires_grad=True)
    context = torch.empty(batch, text_len, config["cross_attention_dim"], **meta)
    steps = torch.zeros(batch, device="meta", dtype=torch.long)
    extra: dict[str, Any] = {}
    if config.get("addition_embed_type") == "text_time":
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.empty(batch, pooled, **meta),
            "time_ids": torch.empty(batch, 6, **meta),
        }
    return (sample, steps, context), extra


def meta_text_encoder(config: dict[str, Any], batch: int, text_len: int) -> tuple[nn.Module, torch.Tensor]:
    """A CLIP text encoder on the meta device and a batch of token ids for it."""
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in config.items() if not k.startswith("_")}))
    length = min(text_len, config.get("max_position_embeddings", 77))
    return model, torch.zeros(batch, length, dtype=torch.long, device="meta")
