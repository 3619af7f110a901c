"""Writing and reading LoRA files: atomic saves, kohya's sshs hashes, the WebUI card sidecar."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save

from ..config.schema import PREFERRED_WEIGHT
from ..errors import ModelError
from ..fileio import atomic_write_bytes


def addnet_hashes(data: bytes) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) of a serialised safetensors file (LORA_FORMAT.md §6)."""
    header_len = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_len :]).hexdigest()
    legacy = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy


def save_lora_file(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], dtype: torch.dtype | None = None
) -> Path:
    """Save tensors (cast to `dtype`, alpha kept as a scalar) with metadata + sshs hashes, atomically."""
    ready = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in tensors.items()
    }
    # the hash covers the data region only, which the header (and so the metadata) does not change
    first = save(ready, metadata={k: v for k, v in metadata.items() if k.startswith("ss_")})
    model_hash, legacy = addnet_hashes(first)
    full = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy}
    atomic_write_bytes(path, save(ready, metadata=full))
    return path


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a LoRA .safetensors (pickle formats are refused); contents are not checked."""
    from ..models.files import read_safetensors, refuse_pickle

    refuse_pickle(path, "LoRA file")
    return read_safetensors(path, "LoRA file")


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _pair_problem(a: torch.Tensor | None, b: torch.Tensor | None, names: tuple[str, str]) -> str | None:
    """`a @ b` must be defined: both present, at least 2-D, a's columns = b's rows (the rank)."""
    if a is None or b is None:
        return (
            f"has {names[0] if a is not None else names[1]} but not {names[1] if a is not None else names[0]}"
        )
    if a.dim() < 2 or b.dim() < 2:
        return f"{names[0]} {_shape(a)} and {names[1]} {_shape(b)} must be matrices"
    if a.shape[1] != b.shape[0]:
        return f"{names[0]} {_shape(a)} and {names[1]} {_shape(b)} disagree on the rank ({a.shape[1]} vs {b.shape[0]})"
    return None


def _lora_problem(up: torch.Tensor | None, down: torch.Tensor | None) -> str | None:
    if up is not None and down is not None and (down.dim() not in (2, 4) or up.dim() != down.dim()):
        return f"lora_up {_shape(up)} and lora_down {_shape(down)} are neither linear (2-D) nor conv (4-D) factors"
    return _pair_problem(up, down, ("lora_up", "lora_down"))


def _loha_problem(parts: dict[str, torch.Tensor]) -> str | None:
    names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    problem = _pair_problem(parts.get(names[0]), parts.get(names[1]), names[:2]) or _pair_problem(
        parts.get(names[2]), parts.get(names[3]), names[2:]
    )
    if problem or any(parts[n].dim() != 2 for n in names):
        return problem or "hada_w* factors must be matrices"
    if (parts[names[0]].shape[0], parts[names[1]].shape[1]) != (
        parts[names[2]].shape[0],
        parts[names[3]].shape[1],
    ):
        return "hada_w1 and hada_w2 make updates of different shapes"
    return None


def _lokr_problem(parts: dict[str, torch.Tensor]) -> str | None:
    for side in ("w1", "w2"):
        full = parts.get(f"lokr_{side}")
        if full is not None and full.dim() not in (2, 4):
            return f"lokr_{side} {_shape(full)} must be a matrix"
        if full is None:
            pair = (f"lokr_{side}_a", f"lokr_{side}_b")
            problem = _pair_problem(parts.get(pair[0]), parts.get(pair[1]), pair)
            if problem:
                return problem
    return None


def _module_problem(parts: dict[str, torch.Tensor]) -> str | None:
    """What makes one module's tensors unusable (LORA_FORMAT.md §2.2 layouts), or None."""
    alpha = parts.get("alpha")
    if alpha is not None and alpha.numel() != 1:
        return f"alpha has {alpha.numel()} values, expected one number"
    weights = {n: t for n, t in parts.items() if n != "alpha"}
    if not all(t.is_floating_point() for t in weights.values()):
        return "holds integer tensors; LoRA weights are floating point"
    if any(t.numel() == 0 for t in weights.values()):
        return "holds an empty tensor"
    if "lora_down.weight" in parts or "lora_up.weight" in parts:
        return _lora_problem(parts.get("lora_up.weight"), parts.get("lora_down.weight"))
    if any(p.startswith("hada_") for p in parts):
        return _loha_problem(parts)
    if any(p.startswith("lokr_") for p in parts):
        return _lokr_problem(parts)
    return f"has no LoRA/LoHa/LoKr weights (parts {sorted(parts)})"


def lora_problems(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Every structural problem of a kohya-format LoRA, one message per bad module (empty when usable)."""
    if not tensors:
        return ["the file holds no tensors"]
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        base, _, part = key.partition(".")
        if base.startswith("lora_"):
            modules.setdefault(base, {})[part] = tensor
    if not modules:
        example = next(iter(tensors))
        if ".lora_A." in example or ".lora_B." in example:
            return [
                f"its keys are in diffusers/PEFT format (e.g. {example}); convert it with "
                "`python -m lorascripts lora convert --to kohya`"
            ]
        return [f"it has no kohya LoRA modules (keys like lora_unet_...; found e.g. {example})"]
    return [
        f"module {name} {problem}" for name, parts in modules.items() if (problem := _module_problem(parts))
    ]


def check_lora_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Raise a ModelError naming the file and the first bad module, for tensors that are about to be used."""
    from ..models.files import first_non_finite

    problems = lora_problems(tensors)
    if problems:
        more = f" ({len(problems) - 1} more modules have problems)" if len(problems) > 1 else ""
        raise ModelError(
            f"{path}: {problems[0]}{more}. The file is damaged or not a LoRA; re-download or retrain it."
        )
    bad = first_non_finite(tensors)
    if bad:
        raise ModelError(
            f"{path}: tensor {bad} contains NaN/inf values (images would turn black, training would diverge). "
            "Use an earlier checkpoint of this LoRA or retrain it."
        )


def read_lora_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """read_lora_file for files about to be applied, trained on, merged or resized: their contents are checked."""
    tensors, metadata = read_lora_file(path)
    check_lora_tensors(path, tensors)
    return tensors, metadata


def write_webui_sidecar(
    lora_path: Path,
    *,
    activation_text: str = "",
    preferred_weight: float = PREFERRED_WEIGHT,
    sd_version: str = "Unknown",
    description: str = "",
    notes: str = "",
) -> Path:
    """`<stem>.json` card metadata as AUTOMATIC1111's card editor writes it; existing user keys are kept."""
    sidecar = lora_path.with_suffix(".json")
    data: dict[str, object] = {}
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = {}
    data.update(
        {
            "description": description or data.get("description", ""),
            "sd version": sd_version,
            "activation text": activation_text,
            "preferred weight": preferred_weight,
            "notes": notes or data.get("notes", ""),
        }
    )
    atomic_write_bytes(sidecar, json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"))
    return sidecar
