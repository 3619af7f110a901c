"""What the pre-flight estimate needs of a Z-Image model without loading it: configs and parameter counts from
file headers (the loader's shape rules, layout.py), and the meta transformer / inputs of one step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..flux1.estimate import PARAMS as FLUX_PARAMS
from ..flux1.estimate import vae_config_default
from .layout import transformer_config, transformer_prefix

if TYPE_CHECKING:
    from ....perf.configs import ModelShapes
    from ..base import Family

# Qwen3-4B (its config.json), for a transformer file that does not hold it (the estimate reads no other file)
QWEN3_4B = {"vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": True,
            "max_position_embeddings": 40960, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6}  # fmt: skip
QWEN3_4B_PARAMS = 4_022_468_096


def checkpoint_shapes(family: Family, shapes: dict[str, tuple[int, ...]], file_bytes: int) -> ModelShapes:
    from ....perf.configs import ModelShapes

    prefix = transformer_prefix(set(shapes)) or ""
    transformer = {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}
    return ModelShapes(
        family=family,
        denoiser=transformer_config(transformer),
        vae={**vae_config_default(), "sample_size": 1024},
        text_encoders=[QWEN3_4B],
        params={
            "unet": sum(math.prod(v) for v in transformer.values()),
            "vae": FLUX_PARAMS["vae"],
            "text": QWEN3_4B_PARAMS,
        },
        file_bytes=file_bytes,
        single_file=True,
    )


def folder_shapes(family: Family, path: Path) -> ModelShapes:
    from ....perf.configs import ModelShapes, folder_params, read_config

    sizes = {name: folder_params(path / name) for name in ("transformer", "vae", "text_encoder")}
    return ModelShapes(
        family=family,
        denoiser=read_config(path / "transformer" / "config.json"),
        vae=read_config(path / "vae" / "config.json"),
        text_encoders=[read_config(path / "text_encoder" / "config.json")],
        params={
            "unet": sizes["transformer"][0],
            "vae": sizes["vae"][0],
            "text": sizes["text_encoder"][0],
        },
        file_bytes=sum(b for _, b in sizes.values()),
    )


def meta_denoiser(config: dict[str, Any]) -> nn.Module:
    """diffusers' ZImageTransformer2DModel on the meta device, its output stacked into one `.sample` tensor (the
    model returns a list of per-image tensors; perf/ reads `.sample`)."""
    from diffusers import ZImageTransformer2DModel
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    class StackedZImage(ZImageTransformer2DModel):
        def forward(self, *args: Any, **kwargs: Any) -> Transformer2DModelOutput:
            out = super().forward(*args, **{**kwargs, "return_dict": False})[0]
            return Transformer2DModelOutput(sample=torch.stack(out))

    clean = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        return StackedZImage(**clean)


def transformer_inputs(
    config: dict[str, Any], batch: int, latent_hw: tuple[int, int], text_len: int, dtype: torch.dtype
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(latents list, timesteps, caption features list) of one step on the meta device; latents require grad."""
    meta = {"device": "meta", "dtype": dtype}
    channels = config.get("in_channels", 16)
    latents = [torch.empty(channels, 1, *latent_hw, **meta, requires_grad=True) for _ in range(batch)]
    features = [torch.empty(text_len, config.get("cap_feat_dim", 2560), **meta) for _ in range(batch)]
    return (latents, torch.empty(batch, device="meta", dtype=torch.float32), features), {}


def meta_text_encoder(config: dict[str, Any], batch: int, text_len: int) -> tuple[nn.Module, torch.Tensor]:
    from transformers import Qwen3Config, Qwen3Model

    with torch.device("meta"):
        model = Qwen3Model(Qwen3Config(**{k: v for k, v in config.items() if not k.startswith("_")}))
    return model, torch.zeros(batch, text_len, dtype=torch.long, device="meta")
