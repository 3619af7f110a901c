"""A kohya module that is one layer in the original model but several in diffusers' (FLUX.1's single-block
`linear1` = q, k, v + MLP input; Z-Image's `attention.qkv` = to_q, to_k, to_v), shared by the DiT families.

The network trains each diffusers part with its own LoRA (network names `<module>__<part>`); the file holds the
one kohya module the original-layout loaders (ComfyUI, Forge, kohya/musubi) patch: downs stacked, ups
block-diagonal (rank = the sum of the parts'), which is the same update exactly. Reading splits the up by rows
with its down (shared down for kohya's own files; each part's own rank back for the block-diagonal files we write).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...errors import ModelError

PART_MARK = "__"  # network name of one part of a fused kohya module


def _modules(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """`<module>.<part>` keys grouped by module, as the network groups them."""
    from ...network.lora import _group

    return _group(tensors)


def _scale(parts: dict[str, torch.Tensor]) -> float:
    rank = parts["lora_down.weight"].shape[0]
    return float(parts["alpha"]) / rank if "alpha" in parts else 1.0


def _fuse(
    name: str, pieces: dict[str, dict[str, torch.Tensor]], rows: dict[str, int]
) -> dict[str, torch.Tensor]:
    """One kohya module from its parts: downs stacked, ups block-diagonal [D1; D2] / blockdiag(U1, U2·s2/s1), alpha
    s1·rank (the same update exactly; rank = the sum of the parts')."""
    for part in pieces.values():
        if "lora_down.weight" not in part:
            raise ModelError(
                f"{name}: only LoRA/LoCon layers can be written as one fused kohya module (found {sorted(part)}); "
                "use network_type lora for this family."
            )
    first = pieces[next(iter(pieces))]
    scale = _scale(first)
    downs, ups = [], []
    total_rows = sum(rows.values())
    offset = 0
    for part, size in rows.items():
        if part in pieces:
            down, up = pieces[part]["lora_down.weight"], pieces[part]["lora_up.weight"]
            full = torch.zeros(total_rows, up.shape[1], dtype=up.dtype)
            full[offset : offset + size] = up * (_scale(pieces[part]) / scale)
            downs.append(down)
            ups.append(full)
        offset += size
    rank = sum(d.shape[0] for d in downs)
    return {
        f"{name}.lora_down.weight": torch.cat(downs),
        f"{name}.lora_up.weight": torch.cat(ups, dim=1),
        f"{name}.alpha": torch.tensor(scale * rank, dtype=first.get("alpha", downs[0]).dtype),
    }


def to_file(tensors: dict[str, torch.Tensor], rows: dict[str, int]) -> dict[str, torch.Tensor]:
    """Network tensors -> the file's: the parts of a fused layer (`<module>__<part>`) as kohya's one module."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for name, parts in _modules(tensors).items():
        base, mark, part = name.partition(PART_MARK)
        if mark:
            fused.setdefault(base, {})[part] = parts
        else:
            out.update({f"{name}.{k}": v for k, v in parts.items()})
    for base, pieces in fused.items():
        out.update(_fuse(base, pieces, rows))
    return out


def _own_columns(up: torch.Tensor, rows: dict[str, int]) -> dict[str, torch.Tensor]:
    """Per part, the rank columns only its rows use; {} unless every column belongs to exactly one part (the
    block-diagonal layout `to_file` writes; kohya's files share every column)."""
    offsets, start = {}, 0
    for part, size in rows.items():
        offsets[part], start = (start, start + size), start + size
    used = {part: up[a:b].abs().sum(dim=0) > 0 for part, (a, b) in offsets.items()}
    owned = {
        part: cols & ~torch.stack([u for p, u in used.items() if p != part]).any(dim=0)
        for part, cols in used.items()
    }
    every_column_once = torch.stack(list(owned.values())).sum(dim=0) == 1
    return owned if bool(every_column_once.all()) and all(bool(c.any()) for c in owned.values()) else {}


def _split(name: str, parts: dict[str, torch.Tensor], rows: dict[str, int]) -> dict[str, torch.Tensor]:
    """One fused kohya module -> its parts, each the same update on its rows (exact)."""
    if "lora_up.weight" not in parts:
        raise ModelError(
            f"{name}: only LoRA layers of a fused kohya module can be loaded (found {sorted(parts)})."
        )
    up, down = parts["lora_up.weight"], parts["lora_down.weight"]
    owned = _own_columns(up, rows)  # our own files: give each part back only its rank, not the sum
    out, offset = {}, 0
    for part, size in rows.items():
        cols = owned.get(part, torch.ones(up.shape[1], dtype=torch.bool))
        key = f"{name}{PART_MARK}{part}"
        out[f"{key}.lora_up.weight"] = up[offset : offset + size][:, cols]
        out[f"{key}.lora_down.weight"] = down[cols]
        if "alpha" in parts:  # the same alpha / rank scale with the part's rank
            out[f"{key}.alpha"] = parts["alpha"] * int(cols.sum()) / up.shape[1]
        offset += size
    return out


def from_file(
    tensors: dict[str, torch.Tensor], rows: dict[str, int], is_fused: Callable[[str], bool]
) -> dict[str, torch.Tensor]:
    """A kohya file's tensors -> the network's: each fused module (`is_fused(name)`) split into its parts (exact)."""
    out: dict[str, torch.Tensor] = {}
    for name, parts in _modules(tensors).items():
        if is_fused(name):
            out.update(_split(name, parts, rows))
        else:
            out.update({f"{name}.{k}": v for k, v in parts.items()})
    return out


def layer_shapes(targets: Iterable[Any], name_of: Callable[[str, str], str]) -> dict[str, tuple[int, ...]]:
    """kohya base name -> the weight shape of the layer it patches, for the key self-test: the parts of a fused
    module (`name_of` gives `<module>__<part>`) stacked by rows, as the original layer holds them."""
    layers: dict[str, tuple[int, ...]] = {}
    for target in targets:
        name = name_of(target.component, target.path).split(PART_MARK)[0]
        shape = tuple(target.module.weight.shape)
        if name in layers:  # a further part of a fused module
            shape = (layers[name][0] + shape[0], *shape[1:])
        layers[name] = shape
    return layers
