"""Architecture of an original-layout (single-file) checkpoint, read from its tensor shapes.

Sizes, depths and block types are all in the shapes. Two things are not: attention head counts and the VAE's
GroupNorm groups. For those, real checkpoints follow fixed rules per family (SD1: 8 heads; SD2/SDXL and the
OpenCLIP encoders: 64 channels a head; CLIP-L: 64 a head; 32 groups); files we write ourselves (the toy model,
test fixtures) carry the exact numbers in their `lorascripts.arch` metadata, which then wins.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .family import StableDiffusionFamily

UNET = "model.diffusion_model."
VAE = "first_stage_model."
ARCH_KEY = "lorascripts.arch"


def _indices(keys: list[str], pattern: str) -> list[int]:
    return sorted({int(m[1]) for k in keys if (m := re.match(pattern, k))})


def unet_config(
    shapes: dict[str, tuple[int, ...]], family: StableDiffusionFamily, arch: dict[str, Any]
) -> dict[str, Any]:
    """diffusers UNet2DConditionModel config for the U-Net in `shapes` (keys without the `model.` prefix)."""
    keys = [k[len(UNET) :] for k in shapes if k.startswith(UNET)]
    s = {k[len(UNET) :]: v for k, v in shapes.items() if k.startswith(UNET)}
    base_ch, in_ch = s["input_blocks.0.0.weight"][:2]
    ops = _indices(keys, r"input_blocks\.(\d+)\.0\.op\.weight")
    span = ops[0] if ops else max(_indices(keys, r"input_blocks\.(\d+)\.")) + 1
    levels = len(ops) + 1
    per_block = span - 1
    channels, attn, depth = [], [], []
    for i in range(levels):
        first = 1 + i * span
        channels.append(s[f"input_blocks.{first}.0.out_layers.3.weight"][0])
        has_attn = f"input_blocks.{first}.1.proj_in.weight" in s
        attn.append(has_attn)
        depth.append(len(_indices(keys, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.")) or 1)
    ctx_key = next(k for k in s if k.endswith("attn2.to_k.weight"))
    linear_proj = len(next(v for k, v in s.items() if k.endswith("proj_in.weight"))) == 2
    heads = arch.get("unet_heads") or (family.fixed_unet_heads or [max(1, c // 64) for c in channels])
    config: dict[str, Any] = {
        "sample_size": arch.get("sample_size", family.default_resolution // 8),
        "in_channels": in_ch,
        "out_channels": s["out.2.weight"][0],
        "block_out_channels": channels,
        "layers_per_block": per_block,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "cross_attention_dim": s[ctx_key][1],
        "attention_head_dim": heads,
        "use_linear_projection": linear_proj,
        "transformer_layers_per_block": depth if family.per_block_transformer_depth else 1,
        "norm_num_groups": arch.get("unet_groups", 32),
    }
    if "middle_block.1.proj_in.weight" not in s:
        config["mid_block_type"] = None
    if "label_emb.0.0.weight" in s:
        projection_in = s["label_emb.0.0.weight"][1]
        pooled = arch.get("pooled_dim", 1280)
        config.update(
            addition_embed_type="text_time",
            projection_class_embeddings_input_dim=projection_in,
            addition_time_embed_dim=(projection_in - pooled) // 6,
        )
    return config


def vae_config(
    shapes: dict[str, tuple[int, ...]], family: StableDiffusionFamily, arch: dict[str, Any]
) -> dict[str, Any]:
    """diffusers AutoencoderKL config for the VAE in `shapes`."""
    s = {k[len(VAE) :]: v for k, v in shapes.items() if k.startswith(VAE)}
    keys = list(s)
    levels = _indices(keys, r"encoder\.down\.(\d+)\.")
    channels = [s[f"encoder.down.{i}.block.0.conv1.weight"][0] for i in levels]
    per_block = len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\."))
    return {
        "in_channels": s["encoder.conv_in.weight"][1],
        "out_channels": s["decoder.conv_out.weight"][0],
        "latent_channels": s["post_quant_conv.weight"][0],
        "block_out_channels": channels,
        "layers_per_block": per_block,
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "norm_num_groups": arch.get("vae_groups", 32),
        "sample_size": arch.get("sample_size", family.default_resolution // 8) * 2 ** (len(channels) - 1),
        "scaling_factor": arch.get("scaling_factor", family.vae_scaling_factor),
    }


def text_config(
    shapes: dict[str, tuple[int, ...]], prefix: str, layout: str, arch: dict[str, Any], index: int
) -> dict[str, Any]:
    """transformers CLIPTextConfig kwargs for one text encoder."""
    s = {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}
    keys = list(s)
    if layout == "clip_l":
        vocab, hidden = s["text_model.embeddings.token_embedding.weight"]
        positions = s["text_model.embeddings.position_embedding.weight"][0]
        layers = len(_indices(keys, r"text_model\.encoder\.layers\.(\d+)\."))
        inter = s["text_model.encoder.layers.0.mlp.fc1.weight"][0]
        act, projection = "quick_gelu", None
    else:
        vocab, hidden = s["token_embedding.weight"]
        positions = s["positional_embedding"][0]
        layers = len(_indices(keys, r"transformer\.resblocks\.(\d+)\."))
        inter = s["transformer.resblocks.0.mlp.c_fc.weight"][0]
        act = "gelu"
        projection = s["text_projection"][1] if "text_projection" in s and index == 1 else None
        if index == 0 and layers == 24:
            layers = (
                23  # SD2: the last OpenCLIP block is unused (penultimate-layer conditioning), as in diffusers
            )
    heads = (arch.get("text_heads") or [None, None])[index] or max(1, hidden // 64)
    config = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": arch.get("text_layers", [layers, layers])[index]
        if "text_layers" in arch
        else layers,
        "num_attention_heads": heads,
        "max_position_embeddings": positions,
        "hidden_act": act,
        # CLIP vocabularies end with <|startoftext|>, <|endoftext|>; the pooled output is read at the EOS token
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
        "pad_token_id": vocab - 1,
    }
    if projection is not None:
        config["projection_dim"] = projection
    return config
