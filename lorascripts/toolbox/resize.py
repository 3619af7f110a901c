"""SVD rank reduction of a LoRA: a fixed rank, or the smallest rank that keeps a fraction of each update's energy."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError
from ..network.save import read_lora_weights, save_lora_file
from .lorafile import group_modules, low_rank_of_modules, module_tensors

logger = logging.getLogger(__name__)


@dataclass
class ResizeResult:
    path: Path
    ranks: dict[str, int] = field(default_factory=dict)  # module -> new rank
    energy: dict[str, float] = field(default_factory=dict)  # module -> fraction of ‖ΔW‖² kept

    @property
    def min_energy(self) -> float:
        return min(self.energy.values()) if self.energy else 1.0


def resize_lora(
    source: Path,
    target: Path,
    *,
    rank: int | None = None,
    energy: float | None = None,
    dtype: torch.dtype | None = None,
) -> ResizeResult:
    """Rewrite every module as up @ down of the new rank with alpha = rank (the update's scale moves into up)."""
    if (rank is None) == (energy is None):
        raise ConfigError("resize needs exactly one of --rank N or --energy F (0 < F <= 1).")
    if energy is not None and not 0 < energy <= 1:
        raise ConfigError(f"--energy must be in (0, 1], got {energy}.")
    tensors, metadata = read_lora_weights(source)
    result = ResizeResult(target)
    out: dict[str, torch.Tensor] = {}
    for name, module in group_modules(tensors).items():
        down, up, new_rank, kept = low_rank_of_modules([(1.0, module)], rank=rank, energy=energy)
        out.update(module_tensors(name, down, up, new_rank))
        result.ranks[name], result.energy[name] = new_rank, kept
    ranks = sorted(set(result.ranks.values()))
    dims = {"ss_network_dim": str(max(ranks)), "ss_network_alpha": str(max(ranks))}
    note = {"rank": rank} if rank is not None else {"energy": energy}
    meta = {**metadata, **dims, "ss_resized_from": source.name, "ss_resize": json.dumps(note)}
    meta["ss_output_name"] = target.stem
    args = json.loads(metadata.get("ss_network_args", "{}") or "{}")
    if "conv_dim" in args:
        args.update(conv_dim=str(max(ranks)), conv_alpha=str(max(ranks)))
        meta["ss_network_args"] = json.dumps(args)
    save_lora_file(target, out, meta, dtype or next(iter(tensors.values())).dtype)
    logger.info("resized %s -> %s: ranks %s, energy kept >= %.4f", source, target, ranks, result.min_energy)
    return result
