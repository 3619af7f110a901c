"""A LoRA from the difference between a fine-tuned checkpoint and its base (SVD of each layer's ΔW).

The layers and their kohya names come from the engine's own target selection and namer, so an extracted file
loads exactly like a trained one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..errors import ModelError
from ..network.save import save_lora_file
from .lorafile import lora_metadata, low_rank, module_tensors
from .reference import kohya_targets

logger = logging.getLogger(__name__)


def extract_lora(
    base_path: Path,
    tuned_path: Path,
    target: Path,
    *,
    rank: int = 32,
    conv_rank: int | None = None,
    min_change: float = 1e-6,
    tokenizer_path: str | None = None,
    dtype: torch.dtype = torch.float16,
) -> dict[str, int]:
    """Write a LoRA with up @ down ≈ tuned − base for every targeted layer that changed (relative ‖ΔW‖ > min_change)."""
    from ..models.loader import load_base_model

    base = load_base_model(str(base_path), tokenizer_path=tokenizer_path)
    tuned = load_base_model(str(tuned_path), tokenizer_path=tokenizer_path)
    if base.family != tuned.family:
        raise ModelError(
            f"{tuned_path.name} is {tuned.family.label}, {base_path.name} is {base.family.label}: extract needs "
            "two checkpoints of one family."
        )
    with_conv = conv_rank is not None
    tuned_targets = {(t.component, t.path): t.module for _, t in kohya_targets(tuned, with_conv)}
    out: dict[str, torch.Tensor] = {}
    counts = {"extracted": 0, "unchanged": 0}
    for name, t in kohya_targets(base, with_conv):
        before, after = (
            t.module.weight.detach().float(),
            tuned_targets[(t.component, t.path)].weight.detach().float(),
        )
        delta = after - before
        if float(delta.norm()) <= min_change * max(float(before.norm()), 1e-12):
            counts["unchanged"] += 1
            continue
        wanted = conv_rank if t.role == "conv" and conv_rank else rank
        down, up, new_rank, _ = low_rank(delta, rank=wanted)
        out.update(module_tensors(name, down, up, new_rank))
        counts["extracted"] += 1
    if not out:
        raise ModelError(
            f"{tuned_path.name} does not differ from {base_path.name} in any layer a LoRA can hold."
        )
    out = base.family.lora_file_tensors(base, out)  # network names -> the file's (FLUX: one fused linear1)
    sources = json.dumps({"base": base_path.name, "tuned": tuned_path.name})
    meta = lora_metadata(base.family.name, rank, rank, target.stem, ss_extracted_from=sources)
    if conv_rank:
        meta["ss_network_args"] = json.dumps({"conv_dim": str(conv_rank), "conv_alpha": str(conv_rank)})
    save_lora_file(target, out, meta, dtype)
    logger.info(
        "extracted %d layers (%d unchanged) into %s", counts["extracted"], counts["unchanged"], target
    )
    return counts
