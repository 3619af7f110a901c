"""Z-Image LoRA layers and the file format.

The file is kohya's, named by the original Z-Image modules with `_` (`lora_unet_layers_0_attention_qkv`,
`..._attention_out`, `..._feed_forward_w1`, `..._adaLN_modulation_0`, also `noise_refiner_N` / `context_refiner_N`)
with `.alpha`: what ComfyUI 0.3.75 maps through its generic `lora_unet_<model key>` rule on the Z-Image model it
loads (original names, fused qkv: comfy/lora.py `model_lora_keys_unet`), and what musubi-tuner's
`convert_z_image_lora_to_comfy.py` writes for ComfyUI (and reads back with `--reverse`). Chosen over musubi's own
`lora_unet_layers_0_attention_to_q` (diffusers names, which ComfyUI does not map) as the default because ComfyUI is
where these LoRAs are used; `output_format: diffusers` writes ai-toolkit's form (`diffusion_model.<diffusers
name>.lora_A/lora_B`, diffusers_lora.py), which ComfyUI (its `z_image_to_diffusers` map), diffusers and ai-toolkit
read, and `lora convert` turns one into the other.

Training runs on diffusers' model, where q, k and v are three Linears; each gets its own LoRA (network names
`..._attention_qkv__q/__k/__v`) and the file holds the one fused module (fused_lora.py: downs stacked, ups
block-diagonal, the same update exactly).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ....errors import ModelError
from ....network.targets import Target
from .. import fused_lora
from ..fused_lora import PART_MARK

BLOCK_LISTS = ("layers", "noise_refiner", "context_refiner")
# diffusers path inside a block -> (original name inside the block, role)
BLOCK = {
    "attention.to_q": ("attention.qkv" + PART_MARK + "q", "q_proj"),
    "attention.to_k": ("attention.qkv" + PART_MARK + "k", "k_proj"),
    "attention.to_v": ("attention.qkv" + PART_MARK + "v", "v_proj"),
    "attention.to_out.0": ("attention.out", "out_proj"),
    "feed_forward.w1": ("feed_forward.w1", "ff"),
    "feed_forward.w2": ("feed_forward.w2", "ff"),
    "feed_forward.w3": ("feed_forward.w3", "ff"),
    "adaLN_modulation.0": ("adaLN_modulation.0", "mod"),
}
PATH_RX = re.compile(r"^(layers|noise_refiner|context_refiner)\.(\d+)\.(.+)$")
QKV_PARTS = ("q", "k", "v")


def original_name(path: str) -> str | None:
    """Original module name of a transformer layer (`layers.0.attention.qkv__q`), None if not a block Linear."""
    match = PATH_RX.match(path)
    entry = BLOCK.get(match.group(3)) if match else None
    return None if entry is None else f"{match.group(1)}.{match.group(2)}.{entry[0]}"


def transformer_targets(transformer: torch.nn.Module, roles: set[str]) -> list[Target]:
    """Every selected Linear of the main layers and both refiners (modulation only with `mod`)."""
    targets = []
    for path, module in transformer.named_modules():
        match = PATH_RX.match(path)
        if not match or not isinstance(module, torch.nn.Linear):
            continue
        entry = BLOCK.get(match.group(3))
        if entry is not None and entry[1] in roles:
            targets.append(Target("unet", path, module, entry[1], False))
    return targets


class ZImageNamer:
    """(component, module path) -> kohya base name for a Z-Image transformer (no text-encoder LoRA)."""

    def name(self, component: str, path: str) -> str:
        name = original_name(path) if component == "unet" else None
        if name is None:
            raise ModelError(
                f"Z-Image layer {component}:{path} has no kohya name (not a transformer block Linear)."
            )
        return "lora_unet_" + name.replace(".", "_")


def qkv_rows(transformer: Any) -> dict[str, int]:
    """Rows of q, k and v in the fused `attention.qkv` (the model width each)."""
    dim = int(transformer.config.dim)
    return dict.fromkeys(QKV_PARTS, dim)


def is_qkv(name: str) -> bool:
    return name.startswith("lora_unet_") and name.endswith("_attention_qkv")


def to_file(tensors: dict[str, torch.Tensor], rows: dict[str, int]) -> dict[str, torch.Tensor]:
    """Network tensors -> the file's: q, k, v of each attention as the one `attention_qkv` module."""
    return fused_lora.to_file(tensors, rows)


# musubi-tuner's own names (diffusers' modules with `_`) -> ours, so its files load as `initial_lora` too
MUSUBI = re.compile(
    r"^(lora_unet_(?:layers|noise_refiner|context_refiner)_\d+_attention_)(to_[qkv]|to_out_0)\."
)


def _from_musubi(key: str) -> str:
    match = MUSUBI.match(key)
    if not match:
        return key
    inner = "out" if match.group(2) == "to_out_0" else f"qkv{PART_MARK}{match.group(2)[-1]}"
    return match.group(1) + inner + key[match.end() - 1 :]


def from_file(tensors: dict[str, torch.Tensor], rows: dict[str, int]) -> dict[str, torch.Tensor]:
    """A kohya Z-Image file's tensors -> the network's: each `attention_qkv` split into q, k, v (exact); musubi's
    `attention_to_q/k/v` / `attention_to_out_0` modules taken as the parts they are."""
    return fused_lora.from_file({_from_musubi(k): v for k, v in tensors.items()}, rows, is_qkv)


# the rows of each fused layer's parts, under the name the shared family class (dit.py) calls
fused_rows = qkv_rows
