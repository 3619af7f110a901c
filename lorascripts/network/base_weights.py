"""`base_weights` (kohya's and musubi-tuner's name): LoRA files merged into the frozen base model after it loads
and before the run's own LoRA is attached, e.g. ostris's Z-Image Turbo de-distillation adapter, which ai-toolkit
and SimpleTuner fuse into Turbo while training. They change only the model the run trains on: the saved LoRA
holds the run's modules alone, and its metadata (`ls_base_weights`) names the files.

Each file is read like `initial_lora` (kohya or diffusers/ai-toolkit keys), mapped onto the runtime model's layers
by the family (Z-Image's fused qkv split as the LoRA loader does) and its ΔW computed by LyCORIS, as for every
other LoRA we load; W + m·ΔW is then written back in the weight's own dtype. LyCORIS's `merge_to` is not used
because it casts the LoRA to the weight's dtype first, which for an fp8 file's weights would be float8 maths.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ModelError
from ..fileio import file_sha256

logger = logging.getLogger(__name__)
SHA_PREFIX = 12  # hex digits of each file's sha256 kept in the metadata (kohya's sshs_model_hash style)


@dataclass(frozen=True)
class BaseWeight:
    """One `base_weights` file and its multiplier."""

    path: Path
    multiplier: float
    sha256: str

    def record(self) -> dict[str, Any]:
        return {"file": self.path.name, "sha256": self.sha256[:SHA_PREFIX], "multiplier": self.multiplier}


def base_weight_files(files: list[str], multipliers: list[float]) -> list[BaseWeight]:
    """The configured files with their multipliers (1.0 when `base_weights_multiplier` is empty; the config
    checks the counts), checked before the base model loads: each must be an existing .safetensors file."""
    out = []
    for i, name in enumerate(files):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"base_weights file {path} does not exist. Check the path.")
        if path.suffix.lower() != ".safetensors":
            raise ConfigError(
                f"base_weights file {path} is not a .safetensors file; only .safetensors LoRAs are read "
                "(pickle files can run code). Convert it first."
            )
        out.append(BaseWeight(path, float(multipliers[i]) if multipliers else 1.0, file_sha256(path)))
    return out


def merge_base_weights(base: Any, weights: list[BaseWeight]) -> list[dict[str, Any]]:
    """Add m·ΔW of each file to the base model's layers (in place, in each weight's dtype); returns the
    records for the metadata. A file made for another family is refused by name."""
    for weight in weights:
        merged = _merge_one(base, weight)
        logger.info(
            "base_weights: merged %s (x%g, %d layers) into the base model; it is not part of the saved LoRA",
            weight.path.name,
            weight.multiplier,
            merged,
        )
    return [w.record() for w in weights]


def _merge_one(base: Any, weight: BaseWeight) -> int:
    from ..models.families.lora_detect import detect_family, family_label
    from ..toolbox.convert import read_lora_any
    from .from_file import spec_from_metadata
    from .lora import LoraNetwork, _group

    name = weight.path.name
    try:
        tensors, metadata = read_lora_any(weight.path)
    except ModelError as exc:
        raise ModelError(f"base_weights {name}: {exc}") from None
    family = base.family
    found = detect_family(tensors, metadata)
    if found not in ("unknown", family.name):
        raise ModelError(
            f"base_weights {name} is a {family_label(found)} LoRA, but the base model is "
            f"{family_label(family.name)}: use base weights made for this model's family."
        )
    tensors = family.lora_network_tensors(base, tensors)
    try:
        network = LoraNetwork.create(base, spec_from_metadata(metadata, tensors), initial=tensors)
    except ModelError as exc:
        raise ModelError(f"base_weights {name}: {exc}") from None
    seeded = set(_group(tensors))
    count = 0
    with torch.no_grad():
        for module_name, module in network.lora_modules.items():
            if module_name not in seeded:
                continue
            layer = module.org_module[0]
            diff, _ = module.get_diff_weight(weight.multiplier, layer.weight.shape, layer.weight.device)
            layer.weight.copy_((layer.weight.float() + diff.float()).to(layer.weight.dtype))
            count += 1
    return count


def base_weights_metadata(records: list[dict[str, Any]]) -> dict[str, str]:
    """`ls_base_weights` for the LoRA's metadata (nothing when the run used none)."""
    return {"ls_base_weights": json.dumps(records)} if records else {}


def base_weights_note(records: list[dict[str, Any]]) -> str:
    """The card's line about the base weights the LoRA was trained on (not inside it)."""
    if not records:
        return ""
    files = ", ".join(f"{r['file']} x{r['multiplier']:g}" for r in records)
    return f"Trained with base weights merged into the base model (not in this file): {files}."
