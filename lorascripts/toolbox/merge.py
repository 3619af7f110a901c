"""Merging: several LoRAs into one LoRA (exact concatenation or SVD to a rank), or LoRAs into a checkpoint."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch

from ..errors import ConfigError, ModelError
from ..models.families import family_names, get_family
from ..models.families.lora_detect import detect_family, family_label
from ..models.files import read_safetensors, refuse_pickle
from ..network.save import read_lora_weights, save_lora_file
from .lorafile import LoraModule, group_modules, low_rank_of_modules, module_tensors, tag_frequency
from .reference import checkpoint_family

logger = logging.getLogger(__name__)


def _merged_metadata(
    sources: list[tuple[Path, float, dict[str, str]]], rank: int, family: str, name: str
) -> dict[str, str]:
    """The first file's metadata with dims updated, tag counts summed and the sources recorded."""
    base = dict(sources[0][2])
    tags: dict[str, Counter] = {}
    for _, _, meta in sources:
        for folder, counts in tag_frequency(meta).items():
            tags.setdefault(folder, Counter()).update(counts)
    base.update(
        ss_network_module="networks.lora",
        ss_network_dim=str(rank),
        ss_network_alpha=str(rank),
        ss_output_name=name,
        ss_merged_from=json.dumps([{"file": p.name, "weight": w} for p, w, _ in sources]),
        ss_tag_frequency=json.dumps({k: dict(v) for k, v in tags.items()}),
    )
    triggers = [m.get("modelspec.trigger_phrase", "") for _, _, m in sources]
    if any(triggers):
        base["modelspec.trigger_phrase"] = ", ".join(t for t in dict.fromkeys(triggers) if t)
    if family in family_names() and get_family(family).webui_needs_version:
        fields = get_family(family).lora_metadata(v_prediction=False, resolution=0)
        base.setdefault("ss_base_model_version", fields["ss_base_model_version"])
    return base


def merge_loras(
    inputs: list[tuple[Path, float]],
    target: Path,
    *,
    rank: int | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """One LoRA whose update is Σ weightᵢ·ΔWᵢ: stacked factors (exact; rank = sum) or, with `rank`, its SVD."""
    if not inputs:
        raise ConfigError("merge needs at least one LoRA (path and weight).")
    loaded = [(Path(p), float(w), *read_lora_weights(Path(p))) for p, w in inputs]
    families = {detect_family(t, m) for _, _, t, m in loaded}
    if len(families) > 1:
        each = ", ".join(f"{Path(p).name}: {family_label(detect_family(t, m))}" for p, _, t, m in loaded)
        raise ModelError(f"these LoRAs are for different base models ({each}); merge only one family.")
    by_name: dict[str, list[tuple[float, LoraModule]]] = {}
    shapes: dict[str, dict[tuple[int, ...], str]] = {}
    for path, weight, tensors, _ in loaded:
        for name, module in group_modules(tensors).items():
            by_name.setdefault(name, []).append((weight, module))
            shapes.setdefault(name, {}).setdefault(module.layer_shape, path.name)
    clash = next((n for n, s in shapes.items() if len(s) > 1), None)
    if clash:
        found = ", ".join(f"{f}: {shape}" for shape, f in shapes[clash].items())
        raise ModelError(
            f"module {clash} is a different layer in these LoRAs ({found}): they are for different models."
        )
    out: dict[str, torch.Tensor] = {}
    ranks = []
    for name, parts in sorted(by_name.items()):
        if rank is None and all(m.kind == "lora" for _, m in parts):
            ups = [
                module.parts["lora_up.weight"].float() * (w * module.alpha / module.rank)
                for w, module in parts
            ]
            down = torch.cat([module.parts["lora_down.weight"].float() for _, module in parts], 0)
            up, new_rank = torch.cat(ups, 1), down.shape[0]
        else:
            down, up, new_rank, _ = low_rank_of_modules(parts, rank=rank)
        out.update(module_tensors(name, down, up, new_rank))
        ranks.append(new_rank)
    family = families.pop()
    meta = _merged_metadata([(p, w, m) for p, w, _, m in loaded], max(ranks), family, target.stem)
    save_lora_file(target, out, meta, dtype or next(iter(loaded[0][2].values())).dtype)
    logger.info("merged %d LoRAs into %s (ranks %d..%d)", len(inputs), target, min(ranks), max(ranks))
    return target


def merge_into_checkpoint(checkpoint: Path, inputs: list[tuple[Path, float]], target: Path) -> dict[str, int]:
    """Add weightᵢ·ΔWᵢ of each LoRA to the layers of a single-file checkpoint; same keys, dtype and metadata.

    Returns counts: modules merged, and modules skipped because the checkpoint has no such layer.
    """
    from safetensors.torch import save

    from ..fileio import atomic_write_bytes

    refuse_pickle(checkpoint, "checkpoint")
    state, metadata = read_safetensors(Path(checkpoint), "checkpoint")
    state_shapes = {k: tuple(v.shape) for k, v in state.items()}
    family = checkpoint_family(state_shapes)
    layers = family.checkpoint_layers(state_shapes)
    shapes = {name: shape for name, (_, shape) in layers.items()}
    counts = {"merged": 0, "skipped": 0}
    for path, weight in inputs:
        tensors, meta = read_lora_weights(Path(path))
        lora_family = detect_family(tensors, meta)
        if lora_family != family.name:
            raise ModelError(
                f"{Path(path).name} is a {family_label(lora_family)} LoRA; {checkpoint.name} is "
                f"{family_label(family.name)}: merge a LoRA only into a checkpoint of its own family."
            )
        for name, module in group_modules(tensors).items():
            layer, role = family.resolve_webui_layer(name, shapes)
            if layer is None:
                counts["skipped"] += 1
                logger.warning("%s: no layer for %s in the checkpoint; skipped", Path(path).name, name)
                continue
            key = layers[layer][0]
            weight_tensor = state[key]
            delta = module.delta() * weight
            expected = weight_tensor.numel() // (3 if role else 1)  # SD: None, FLUX: "" (no fused sets)
            if delta.numel() != expected:
                raise ModelError(
                    f"{Path(path).name}: module {name} changes a {tuple(delta.shape)} weight, but {key} in "
                    f"{Path(checkpoint).name} is {tuple(weight_tensor.shape)}: the LoRA was made for another model."
                )
            if role:  # a q/k/v slice of a fused OpenCLIP in_proj weight
                index = ("q_proj", "k_proj", "v_proj").index(role)
                size = weight_tensor.shape[0] // 3
                merged = weight_tensor.float().clone()
                merged[index * size : (index + 1) * size] += delta.reshape(size, -1)
            else:
                merged = weight_tensor.float() + delta.reshape(weight_tensor.shape)
            state[key] = merged.to(weight_tensor.dtype)
            counts["merged"] += 1
    metadata["lorascripts.merged_loras"] = json.dumps(
        [{"file": Path(p).name, "weight": w} for p, w in inputs]
    )
    atomic_write_bytes(target, save(state, metadata=metadata))
    logger.info("merged %d modules into %s (%d skipped)", counts["merged"], target, counts["skipped"])
    return counts
