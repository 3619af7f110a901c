"""Z-Image files as people keep them: the transformer in Tongyi-MAI's original layout (what ComfyUI keeps in
`models/diffusion_models`: fused `attention.qkv`, `x_embedder`, `final_layer`; bare or under
`model.diffusion_model.`) or already in diffusers' names, the Qwen3 text encoder (`qwen_3_4b.safetensors`:
transformers' `model.`-prefixed Qwen3 names) and FLUX's `ae.safetensors`; the architecture of each part read from
its tensor shapes.

Everything here works on key names and shapes only (no weights are touched), so detection and the estimate can
use it on a header.
"""

from __future__ import annotations

import re
from typing import Any

from ....errors import ModelError

COMFY_PREFIX = "model.diffusion_model."
# Z-Image's blocks carry `adaLN_modulation.0` (one Linear); Lumina 2 (same original names otherwise) has
# `adaLN_modulation.1` after a SiLU, so this key tells the two apart as ComfyUI's own detection does by width
MARKER = "layers.0.adaLN_modulation.0.weight"
EMBEDDERS = ("x_embedder.weight", "all_x_embedder.2-1.weight")  # original / diffusers layout
QWEN3_MARKER = "layers.0.self_attn.q_norm.weight"  # Qwen3 (Qwen2 has no q/k norm)
# Z-Image fixes these where the shapes cannot say them (diffusers' transformer/config.json of Z-Image-Turbo,
# ComfyUI's model_detection for dim 3840): rotary axes 1/4, 3/8, 3/8 of the head dimension ((32, 48, 48) for 128)
ROPE_THETA = 256.0
AXES_LENS = (1536, 512, 512)
ADALN_EMBED_DIM = 256  # the timestep embedding width of diffusers' ZImageTransformer2DModel


def transformer_prefix(keys: set[str] | list[str]) -> str | None:
    """ "" or "model.diffusion_model." when these keys hold a Z-Image transformer (either layout), else None."""
    keyset = set(keys)
    for prefix in ("", COMFY_PREFIX):
        if prefix + MARKER in keyset and any(prefix + e in keyset for e in EMBEDDERS):
            return prefix
    return None


def is_original(shapes: dict[str, Any] | set[str]) -> bool:
    """Whether transformer keys (no prefix) are in the original layout (fused qkv) rather than diffusers'."""
    return "layers.0.attention.qkv.weight" in shapes


def _indices(keys: Any, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def axes_dims(head_dim: int) -> list[int]:
    """Rotary dimensions per axis (frame, height, width): 1/4, 3/8, 3/8 of the head dimension, each even."""
    if head_dim % 8:
        raise ValueError(
            f"head dimension {head_dim} does not split into Z-Image's rotary axes (a multiple of 8)"
        )
    return [head_dim // 4, head_dim * 3 // 8, head_dim * 3 // 8]


def transformer_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """diffusers ZImageTransformer2DModel config of a transformer (keys without prefix, either layout)."""
    embed = shapes.get("x_embedder.weight", shapes.get("all_x_embedder.2-1.weight"))
    if embed is None:
        raise ValueError("no x_embedder weight")
    dim, patch_in = embed
    norm = "layers.0.attention.q_norm.weight" if is_original(shapes) else "layers.0.attention.norm_q.weight"
    head_dim = shapes[norm][0]
    if dim % head_dim:
        raise ValueError(f"width {dim} is not a multiple of the head dimension {head_dim}")
    heads = dim // head_dim
    return {
        "all_patch_size": (2,),
        "all_f_patch_size": (1,),
        "in_channels": patch_in // 4,
        "dim": dim,
        "n_layers": len(_indices(shapes, r"layers\.(\d+)\.")),
        "n_refiner_layers": len(_indices(shapes, r"noise_refiner\.(\d+)\.")),
        "n_heads": heads,
        "n_kv_heads": heads,
        "cap_feat_dim": shapes["cap_embedder.1.weight"][1],
        "rope_theta": ROPE_THETA,
        "t_scale": 1000.0,
        "axes_dims": axes_dims(head_dim),
        "axes_lens": list(AXES_LENS),
    }


def qwen3_prefix(keys: set[str] | list[str]) -> str | None:
    """The prefix of a Qwen3 text encoder's keys ("model." as ComfyUI keeps it, or ""), None if not Qwen3."""
    keyset = set(keys)
    for prefix in ("model.", "", "text_encoders.qwen3_4b.transformer.model."):
        if prefix + QWEN3_MARKER in keyset and prefix + "embed_tokens.weight" in keyset:
            return prefix
    return None


def qwen3_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """transformers Qwen3Config kwargs of a Qwen3 encoder (keys without prefix). Qwen3-4B's fixed settings (rope
    theta 1e6, RMS eps 1e-6, tied embeddings) are what its config.json says; the shapes give the rest."""
    vocab, hidden = shapes["embed_tokens.weight"]
    head_dim = shapes[QWEN3_MARKER][0]
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": shapes["layers.0.mlp.gate_proj.weight"][0],
        "num_hidden_layers": len(_indices(shapes, r"layers\.(\d+)\.")),
        "num_attention_heads": shapes["layers.0.self_attn.q_proj.weight"][0] // head_dim,
        "num_key_value_heads": shapes["layers.0.self_attn.k_proj.weight"][0] // head_dim,
        "head_dim": head_dim,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": True,
        "use_cache": False,
    }


def transformer_state(state: dict[str, Any]) -> dict[str, Any]:
    """The transformer's tensors of a file without prefix (ModelError when the file holds none)."""
    prefix = transformer_prefix(set(state))
    if prefix is None:
        raise ModelError(f"no Z-Image transformer ({MARKER}) in the file")
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
