"""FLUX.1 files as people keep them: BFL's single-file transformer, `ae`, CLIP-L and T5 files, ComfyUI's
all-in-one checkpoints; the architecture of each part read from its tensor shapes.

Everything here works on key names and shapes only (no weights are touched), so detection and the estimate
can use it on a header.
"""

from __future__ import annotations

import re
from typing import Any

from ....errors import ModelError

# what marks a BFL-layout FLUX transformer (diffusers' own detection key is the qk-norm scale of block 0)
BFL_MARKER = "double_blocks.0.img_attn.qkv.weight"
COMFY_PREFIX = "model.diffusion_model."
# ComfyUI's all-in-one checkpoints (`CheckpointSave` of a FLUX model)
ALL_IN_ONE = {
    "clip_l": "text_encoders.clip_l.transformer.",
    "t5": "text_encoders.t5xxl.transformer.",
    "vae": "vae.",
}
# FLUX.1's VAE latent normalisation (diffusers' FLUX.1 vae/config.json); `ae.safetensors` does not carry it
FLUX_VAE_SCALE = 0.3611
FLUX_VAE_SHIFT = 0.1159


def transformer_prefix(keys: set[str] | list[str]) -> str | None:
    """ "" or "model.diffusion_model." when these keys hold a BFL-layout FLUX transformer, else None."""
    for prefix in ("", COMFY_PREFIX):
        if prefix + BFL_MARKER in keys:
            return prefix
    return None


def _indices(keys: Any, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def transformer_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """diffusers FluxTransformer2DModel config of a BFL-layout transformer (keys without prefix).

    FLUX fixes what shapes cannot say in the same proportions at every size: rotary axes of 1/8, 7/16, 7/16 of
    the head dimension ((16, 56, 56) for 128), and the MLP ratio 4 that the single blocks' linear1 shows.
    """
    hidden, in_channels = shapes["img_in.weight"]
    head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    if hidden % head_dim or head_dim % 16:
        raise ValueError(f"hidden size {hidden} and head dimension {head_dim} do not fit FLUX's layout")
    return {
        "patch_size": 1,
        "in_channels": in_channels,
        "out_channels": shapes["final_layer.linear.weight"][0],
        "num_layers": len(_indices(shapes, r"double_blocks\.(\d+)\.")),
        "num_single_layers": len(_indices(shapes, r"single_blocks\.(\d+)\.")),
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": shapes["txt_in.weight"][1],
        "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
        "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
        "axes_dims_rope": (head_dim // 8, head_dim * 7 // 16, head_dim * 7 // 16),
    }


def vae_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """diffusers AutoencoderKL config of a FLUX `ae` file in the original layout (no quant convs)."""
    levels = _indices(shapes, r"encoder\.down\.(\d+)\.")
    channels = [shapes[f"encoder.down.{i}.block.0.conv1.weight"][0] for i in levels]
    return {
        "in_channels": shapes["encoder.conv_in.weight"][1],
        "out_channels": shapes["decoder.conv_out.weight"][0],
        "latent_channels": shapes["encoder.conv_out.weight"][0] // 2,
        "block_out_channels": channels,
        "layers_per_block": len(_indices(shapes, r"encoder\.down\.0\.block\.(\d+)\.")),
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        # GroupNorm's groups are not in the shapes; FLUX (like every LDM VAE) uses 32 when the width allows
        "norm_num_groups": 32 if channels[0] % 32 == 0 else channels[0] // 2,
        "sample_size": 1024,
        "use_quant_conv": "quant_conv.weight" in shapes,
        "use_post_quant_conv": "post_quant_conv.weight" in shapes,
        "scaling_factor": FLUX_VAE_SCALE,
        "shift_factor": FLUX_VAE_SHIFT,
    }


def t5_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """transformers T5Config kwargs of a T5 encoder file (transformers' layout, as ComfyUI's t5xxl files)."""
    vocab, d_model = shapes["shared.weight"]
    attention = "encoder.block.0.layer.0.SelfAttention."
    heads = shapes[attention + "relative_attention_bias.weight"][1]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    ff = shapes["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"][0]
    return {
        "vocab_size": vocab,
        "d_model": d_model,
        "d_kv": shapes[attention + "q.weight"][0] // heads,
        "d_ff": ff,
        "num_layers": len(_indices(shapes, r"encoder\.block\.(\d+)\.")),
        "num_heads": heads,
        "relative_attention_num_buckets": shapes[attention + "relative_attention_bias.weight"][0],
        "feed_forward_proj": "gated-gelu" if gated else "relu",
        "is_encoder_decoder": False,
        "use_cache": False,
    }


def split_parts(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{part: its tensors without prefix} of one file: the transformer, and in an all-in-one checkpoint also
    `vae`, `clip_l`, `t5`."""
    prefix = transformer_prefix(set(state))
    if prefix is None:
        raise ModelError(f"no FLUX transformer ({BFL_MARKER}) in the file")
    parts: dict[str, dict[str, Any]] = {"transformer": {}}
    for key, value in state.items():
        if key.startswith(prefix):
            parts["transformer"][key[len(prefix) :]] = value
            continue
        for part, part_prefix in ALL_IN_ONE.items():
            if key.startswith(part_prefix):
                parts.setdefault(part, {})[key[len(part_prefix) :]] = value
    return parts


def is_part(shapes: dict[str, Any], part: str) -> bool:
    """Whether a file's keys are those of this FLUX part (a check before loading a file the user named)."""
    markers = {
        "vae": "encoder.conv_in.weight",
        "clip_l": "text_model.embeddings.token_embedding.weight",
        "t5": "shared.weight",
    }
    return markers[part] in shapes or (part == "t5" and "encoder.embed_tokens.weight" in shapes)
