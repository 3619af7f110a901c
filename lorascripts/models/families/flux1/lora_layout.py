"""FLUX.1 LoRA layers and their kohya names (`lora_unet_double_blocks_N_img_attn_qkv`, ...).

Training runs on diffusers' FluxTransformer2DModel with q/k/v fused (load.py), so every double-block layer is
one BFL layer: `to_qkv` is `img_attn.qkv`, `to_added_qkv` is `txt_attn.qkv`, and so on. Only the single blocks
differ: BFL's `linear1` computes q, k, v and the MLP input in one matrix, where diffusers has `attn.to_qkv` and
`proj_mlp` on the same input. Both get a LoRA (network names `..._linear1__qkv` and `..._linear1__mlp`), and
the file holds kohya's single `linear1` module: downs stacked, ups block-diagonal (rank = the sum of the two),
which is the same update exactly. Reading a kohya file splits `linear1`'s up by rows (shared down), also exact.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ....errors import ModelError
from ....network.targets import ATTENTION_ROLES, Target
from .. import fused_lora
from ..sd.naming import KohyaNamer

# diffusers path inside a block -> (BFL name inside the block, role)
DOUBLE = {
    "attn.to_qkv": ("img_attn.qkv", "qkv"),
    "attn.to_added_qkv": ("txt_attn.qkv", "qkv"),
    "attn.to_out.0": ("img_attn.proj", "out_proj"),
    "attn.to_add_out": ("txt_attn.proj", "out_proj"),
    "ff.net.0.proj": ("img_mlp.0", "ff"),
    "ff.net.2": ("img_mlp.2", "ff"),
    "ff_context.net.0.proj": ("txt_mlp.0", "ff"),
    "ff_context.net.2": ("txt_mlp.2", "ff"),
    "norm1.linear": ("img_mod.lin", "mod"),
    "norm1_context.linear": ("txt_mod.lin", "mod"),
}
SINGLE = {
    "attn.to_qkv": ("linear1__qkv", "qkv"),
    "proj_mlp": ("linear1__mlp", "ff"),
    "proj_out": ("linear2", "out_ff"),
    "norm.linear": ("modulation.lin", "mod"),
}
BLOCKS = {
    "transformer_blocks": ("double_blocks", DOUBLE),
    "single_transformer_blocks": ("single_blocks", SINGLE),
}
PATH_RX = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")
TEXT_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


def bfl_name(path: str) -> str | None:
    """BFL module name of a transformer layer (`double_blocks.0.img_attn.qkv`), None if not a block layer."""
    match = PATH_RX.match(path)
    if not match:
        return None
    block, table = BLOCKS[match.group(1)]
    entry = table.get(match.group(3))
    return None if entry is None else f"{block}.{match.group(2)}.{entry[0]}"


def selected(role: str, roles: set[str]) -> bool:
    """Whether a FLUX layer of this role is trained for these target roles (fused layers: any of their parts)."""
    if role == "qkv":
        return bool(roles & {"q_proj", "k_proj", "v_proj"})
    if role == "out_ff":  # single blocks' linear2 projects attention and MLP outputs together
        return bool(roles & {"out_proj", "ff"})
    return role in roles


def transformer_targets(transformer: torch.nn.Module, roles: set[str]) -> list[Target]:
    """Every selected Linear of the double and single blocks (kohya's set; modulation only with `mod`)."""
    targets = []
    for path, module in transformer.named_modules():
        match = PATH_RX.match(path)
        if not match or not isinstance(module, torch.nn.Linear):
            continue
        entry = BLOCKS[match.group(1)][1].get(match.group(3))
        if entry is not None and selected(entry[1], roles):
            targets.append(Target("unet", path, module, entry[1], False))
    return targets


def text_targets(encoder: torch.nn.Module, roles: set[str]) -> list[Target]:
    """CLIP-L's attention and MLP projections (kohya's `lora_te1_`); T5 stays frozen."""
    from ..sd.targets import text_targets as clip_targets

    return clip_targets(
        encoder, "te1", roles & (set(ATTENTION_ROLES) | {"fc1", "fc2"}), needs_full_attention=False
    )


class FluxNamer:
    """(component, module path) -> kohya base name for a FLUX.1 model."""

    def __init__(self) -> None:
        self._text = KohyaNamer(None, ldm_unet_names=False)

    def name(self, component: str, path: str) -> str:
        if component != "unet":
            return self._text.name(component, path)
        bfl = bfl_name(path)
        if bfl is None:
            raise ModelError(f"FLUX layer {path} has no kohya name (not a double/single block Linear).")
        return "lora_unet_" + bfl.replace(".", "_")


def linear1_rows(transformer: Any) -> dict[str, int]:
    """Rows of each part of a single block's linear1: q, k, v (3 × hidden), then the MLP (4 × hidden)."""
    config = transformer.config
    hidden = config.num_attention_heads * config.attention_head_dim
    return {"qkv": 3 * hidden, "mlp": 4 * hidden}


def to_file(tensors: dict[str, torch.Tensor], rows: dict[str, int]) -> dict[str, torch.Tensor]:
    """Network tensors -> the file's: the single blocks' linear1 parts fused into kohya's one module."""
    return fused_lora.to_file(tensors, rows)


def _is_linear1(name: str) -> bool:
    return name.startswith("lora_unet_single_blocks_") and name.endswith("_linear1")


def from_file(tensors: dict[str, torch.Tensor], rows: dict[str, int]) -> dict[str, torch.Tensor]:
    """A kohya FLUX file's tensors -> the network's: each linear1 split into its qkv and mlp parts (exact)."""
    return fused_lora.from_file(tensors, rows, _is_linear1)


# the rows of each fused layer's parts, under the name the shared family class (dit.py) calls
fused_rows = linear1_rows
