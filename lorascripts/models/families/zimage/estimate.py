"""What the pre-flight estimate needs of a Z-Image model without loading it: configs and parameter counts from
file headers (the loader's shape rules, layout.py), and the meta transformer / inputs of one step."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..flux1.estimate import PUBLISHED as FLUX_PUBLISHED
from ..flux1.estimate import count_params, sub_shapes, vae_config_default
from ..flux1.layout import vae_config
from .find import PARTS
from .layout import qwen3_config, qwen3_prefix, transformer_config, transformer_prefix

if TYPE_CHECKING:
    from ....perf.configs import Header, ModelShapes
    from ..base import Family

# Qwen3-4B (its config.json), for a text-encoder file that cannot be found before loading
QWEN3_4B = {"vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": True,
            "max_position_embeddings": 40960, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6}  # fmt: skip
# parameters and the dtype of the published files (qwen_3_4b.safetensors is bf16; the VAE is FLUX.1's ae)
PUBLISHED = {"text_encoder": (4_022_468_096, "BF16"), "vae": FLUX_PUBLISHED["vae"]}


def checkpoint_shapes(family: Family, header: Header, components: dict[str, str | None]) -> ModelShapes:
    """The transformer from the checkpoint's header, the VAE and Qwen3 from the headers of the part files the
    load will read (find.py's rules); a part not found stands in at its published size."""
    from ....perf.configs import PartsRead

    read = PartsRead()
    read.add(header)
    transformer = sub_shapes(header.shapes, transformer_prefix(set(header.shapes)) or "")
    found: dict[str, dict[str, tuple[int, ...]]] = {}
    for part in ("text_encoder", "vae"):
        found[part] = read.part(PARTS[part], components.get(part), header.path, "Z-Image", PUBLISHED[part])
    qwen_prefix = qwen3_prefix(set(found["text_encoder"]))  # None: not a Qwen3 file, the load refuses it
    qwen = {} if qwen_prefix is None else sub_shapes(found["text_encoder"], qwen_prefix)
    return read.model_shapes(
        family,
        denoiser=transformer_config(transformer),
        vae=vae_config(found["vae"]) if found["vae"] else {**vae_config_default(), "sample_size": 1024},
        text_encoders=[qwen3_config(qwen) if qwen else QWEN3_4B],
        params={
            "unet": count_params(transformer),
            "vae": count_params(found["vae"]) or PUBLISHED["vae"][0],
            "text": count_params(qwen) or PUBLISHED["text_encoder"][0],
        },
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
