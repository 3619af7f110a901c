"""A kohya FLUX.1 LoRA in diffusers' PEFT names, as `FluxPipeline.load_lora_weights` and ai-toolkit write them:
`transformer.transformer_blocks.N.attn.to_q.lora_A.weight`, `text_encoder.text_model....lora_B.weight`.

diffusers' FLUX layers are unfused: BFL's `img_attn.qkv` is `attn.to_q/to_k/to_v`, and a single block's `linear1`
is `attn.to_q/to_k/to_v` + `proj_mlp`. A fused module's update `up @ down` is split by the rows of `up` with the
same `down` (exact for our block-diagonal `linear1` and for kohya's shared-rank one alike); the rows come from the
file itself (a fused qkv is 3 × its input width), so any width converts. The scale alpha/rank is folded into
`lora_B`. Back to kohya (`kohya_modules`), the parts of one BFL layer are fused again: parts with one shared
down (what this split writes) get their ups stacked by rows, so a file converted both ways keeps its ranks;
parts with their own downs (ai-toolkit trains q, k, v apart) are stacked with block-diagonal ups (exact; rank =
the sum).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from .lora_layout import BLOCKS

# BFL layer inside a block -> diffusers paths of its row groups ("q", "k", "v": one input width each; "rest")
SPLIT = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
}
UNET_RX = re.compile(r"^lora_unet_(double|single)_blocks_(\d+)_(.+)$")
TEXT_RX = re.compile(r"^lora_te1?_text_model_encoder_layers_(\d+)_(self_attn|mlp)_(.+)$")


def _direct() -> dict[tuple[str, str], str]:
    """(double|single, BFL name with `_`) -> diffusers path, for the layers that map one to one."""
    out = {}
    for container, (bfl_block, table) in BLOCKS.items():
        kind = bfl_block.split("_")[0]
        for path, (bfl, _) in table.items():
            if "__" not in bfl and bfl not in SPLIT:
                out[(kind, bfl.replace(".", "_"))] = f"transformer.{container}.{{}}.{path}"
    return out


DIRECT = _direct()


def _row_groups(bfl: str, up: torch.Tensor, width: int) -> list[tuple[str, torch.Tensor]]:
    paths = SPLIT[bfl]
    sizes = [width] * 3 + ([up.shape[0] - 3 * width] if len(paths) == 4 else [])
    return list(zip(paths, torch.split(up, sizes)))


def diffusers_names(name: str, down: torch.Tensor, up: torch.Tensor) -> list[tuple[str, torch.Tensor]] | None:
    """(diffusers module key, its lora_B) for one kohya module; the down (lora_A) is shared. None: no such layer."""
    text = TEXT_RX.match(name)
    if text:
        return [(f"text_encoder.text_model.encoder.layers.{text[1]}.{text[2]}.{text[3]}", up)]
    match = UNET_RX.match(name)
    if not match:
        return None
    kind, index, inner = match.groups()
    split = {bfl.replace(".", "_"): bfl for bfl in SPLIT}
    if inner in split and (kind == "single") == (inner == "linear1"):
        block = "transformer_blocks" if kind == "double" else "single_transformer_blocks"
        groups = _row_groups(split[inner], up, int(down.shape[1]))
        return [(f"transformer.{block}.{index}.{path}", part) for path, part in groups]
    template = DIRECT.get((kind, inner))
    return None if template is None else [(template.format(index), up)]


KEY_RX = re.compile(r"^transformer\.(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")
TEXT_KEY_RX = re.compile(r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)$")
SPLIT_IN = {"transformer_blocks": ("img_attn.qkv", "txt_attn.qkv"), "single_transformer_blocks": ("linear1",)}


def kohya_part(key: str) -> tuple[str, int, int] | None:
    """(kohya module, part index, parts) of one diffusers FLUX module key (no `.lora_A.weight`); None: no layer."""
    text = TEXT_KEY_RX.match(key)
    if text:
        return f"lora_te1_text_model_encoder_layers_{text[1]}_{text[2]}_{text[3]}", 0, 1
    match = KEY_RX.match(key)
    if not match:
        return None
    container, index, path = match.groups()
    kind = "double" if container == "transformer_blocks" else "single"
    for bfl in SPLIT_IN[container]:
        if path in SPLIT[bfl]:
            return (
                f"lora_unet_{kind}_blocks_{index}_{bfl.replace('.', '_')}",
                SPLIT[bfl].index(path),
                len(SPLIT[bfl]),
            )
    for (k, bfl), template in DIRECT.items():
        if k == kind and template.format(index) == f"transformer.{container}.{index}.{path}":
            return f"lora_unet_{kind}_blocks_{index}_{bfl}", 0, 1
    return None


def _part_rows(index: int, width: int) -> int:
    return width if index < 3 else 4 * width  # q, k, v are the input's width; the MLP input 4 times it


def fuse_parts(
    parts: dict[int, tuple[torch.Tensor, torch.Tensor]], count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One kohya module from the (down, scaled up) of its diffusers parts. Parts that share one down (our own
    split, diffusers' kohya split) keep it and stack their ups by rows: the rank stays. Otherwise the downs are
    stacked and the ups block-diagonal (rank = the sum). A part not in the file is a zero block."""
    downs = [down for down, _ in parts.values()]
    width = downs[0].shape[1]
    if all(torch.equal(downs[0], down) for down in downs[1:]):
        rank = downs[0].shape[0]
        ups = [
            parts[i][1].float() if i in parts else torch.zeros(_part_rows(i, width), rank)
            for i in range(count)
        ]
        return downs[0].float(), torch.cat(ups)
    stacked, ups = [], []
    for i in range(count):
        down, up = parts.get(i, (None, None))
        if down is None:
            down, up = torch.zeros(1, width), torch.zeros(_part_rows(i, width), 1)
        stacked.append(down.float())
        ups.append(up.float())
    return torch.cat(stacked), torch.block_diag(*ups)


def kohya_modules(
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]],
    part_of: Callable[[str], tuple[str, int, int] | None] | None = None,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """kohya modules {name: (down, up)} from diffusers modules {key: (lora_A, lora_B with its scale folded in)},
    and the keys with no layer; `part_of` places a key in its kohya module (default FLUX's `kohya_part`; Z-Image
    gives its own, the fusing rule is the same)."""
    part_of = part_of or kohya_part
    grouped: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    counts: dict[str, int] = {}
    skipped = []
    for key, parts in modules.items():
        where = part_of(key)
        if where is None:
            skipped.append(key)
            continue
        name, index, counts[name] = where
        grouped.setdefault(name, {})[index] = parts
    return {name: fuse_parts(parts, counts[name]) for name, parts in grouped.items()}, skipped
