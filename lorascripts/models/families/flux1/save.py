"""FLUX.1 parts written in the layouts people have them: the transformer in BFL's single-file layout, the VAE as
BFL's `ae.safetensors`, CLIP-L and T5 as ComfyUI's text-encoder files (the toy model and test fixtures).

diffusers converts BFL's transformer layout to its own but has no converter back. Rather than hand-writing the
inverse of every rename, split and reorder, `bfl_transformer_state` runs diffusers' own converter (`load._convert`)
once on element ids (every element of the BFL state numbered) and places each diffusers value at the id it came
from: the inverse of whatever the converter does, exactly, as long as it only moves elements (it does).
"""

from __future__ import annotations

from typing import Any

import torch

from ..sd.ldm_names import clip_l_state, vae_to_ldm
from .layout import transformer_config
from .load import _convert

__all__ = ["ae_state", "bfl_shapes", "bfl_shapes_of", "bfl_transformer_state", "clip_l_state", "t5_state"]


def bfl_shapes(
    guidance: bool,
    hidden: int,
    head_dim: int,
    doubles: int = 1,
    singles: int = 1,
    text: tuple[int, int] = (4096, 768),
    latent: int = 16,
) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a FLUX transformer in BFL's key layout (`hidden` 3072 with `head_dim` 128: FLUX.1's width),
    with `doubles` double and `singles` single blocks, `text` the widths of the T5 states and the pooled CLIP
    output (FLUX.1: 4096, 768) and `latent` the VAE's latent channels (2x2 packed: 4x as many inputs)."""
    h, mlp = hidden, 4 * hidden
    linears: dict[str, tuple[int, ...]] = {
        "img_in": (h, 4 * latent), "txt_in": (h, text[0]), "time_in.in_layer": (h, 256), "time_in.out_layer": (h, h),
        "vector_in.in_layer": (h, text[1]), "vector_in.out_layer": (h, h), "final_layer.linear": (4 * latent, h),
        "final_layer.adaLN_modulation.1": (2 * h, h),
    }  # fmt: skip
    norms = []
    for i in range(doubles):
        block = f"double_blocks.{i}"
        linears.update({
            f"{block}.img_mod.lin": (6 * h, h), f"{block}.txt_mod.lin": (6 * h, h),
            f"{block}.img_attn.qkv": (3 * h, h), f"{block}.txt_attn.qkv": (3 * h, h),
            f"{block}.img_attn.proj": (h, h), f"{block}.txt_attn.proj": (h, h),
            f"{block}.img_mlp.0": (mlp, h), f"{block}.img_mlp.2": (h, mlp),
            f"{block}.txt_mlp.0": (mlp, h), f"{block}.txt_mlp.2": (h, mlp),
        })  # fmt: skip
        norms += [f"{block}.img_attn", f"{block}.txt_attn"]
    for i in range(singles):
        linears.update({
            f"single_blocks.{i}.modulation.lin": (3 * h, h), f"single_blocks.{i}.linear1": (3 * h + mlp, h),
            f"single_blocks.{i}.linear2": (h, h + mlp),
        })  # fmt: skip
        norms.append(f"single_blocks.{i}")
    if guidance:
        linears.update({"guidance_in.in_layer": (h, 256), "guidance_in.out_layer": (h, h)})
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in linears.items():
        shapes.update({f"{name}.weight": shape, f"{name}.bias": (shape[0],)})
    for norm in norms:
        shapes.update({f"{norm}.norm.{which}.scale": (head_dim,) for which in ("query_norm", "key_norm")})
    return shapes


def bfl_shapes_of(model: Any) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a diffusers FluxTransformer2DModel in BFL's key layout."""
    c = model.config
    return bfl_shapes(
        c.guidance_embeds,
        c.num_attention_heads * c.attention_head_dim,
        c.attention_head_dim,
        c.num_layers,
        c.num_single_layers,
        (c.joint_attention_dim, c.pooled_projection_dim),
        c.in_channels // 4,
    )


def bfl_transformer_state(model: Any) -> dict[str, torch.Tensor]:
    """A diffusers FluxTransformer2DModel (q/k/v not fused) as BFL's single-file state dict."""
    shapes = bfl_shapes_of(model)
    ids, offset = {}, 0
    for name, shape in shapes.items():
        count = int(torch.Size(shape).numel())
        # float64 holds every integer below 2**53 exactly, and the converter only moves elements
        ids[name] = torch.arange(offset, offset + count, dtype=torch.float64).reshape(shape)
        offset += count
    mapped = _convert(ids, transformer_config(shapes))
    own = model.state_dict()
    if set(mapped) != set(own):
        raise ValueError(f"BFL layout does not cover the model: {sorted(set(mapped) ^ set(own))[:4]}")
    order = torch.cat([mapped[k].reshape(-1) for k in own]).long()
    values = torch.cat([own[k].detach().reshape(-1).float() for k in own])
    if order.numel() != offset or not torch.equal(torch.sort(order).values, torch.arange(offset)):
        raise ValueError("diffusers' FLUX converter did not map BFL elements one to one")
    flat = torch.empty(offset, dtype=torch.float32)
    flat[order] = values
    out, start = {}, 0
    for name, shape in shapes.items():
        count = int(torch.Size(shape).numel())
        out[name] = flat[start : start + count].reshape(shape).clone()
        start += count
    return out


def ae_state(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The VAE in BFL's `ae.safetensors` layout (LDM names, 1x1-conv attention)."""
    out = {}
    for key, value in vae.state_dict().items():
        name = vae_to_ldm(key, len(vae.config.block_out_channels))
        out[name] = value[:, :, None, None] if ".mid.attn_1." in name and value.dim() == 2 else value
    return out


def t5_state(t5: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A T5EncoderModel as ComfyUI's t5xxl files hold it (`shared.weight`, no tied copy)."""
    return {k: v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
