"""Writing and reading LoRA files: atomic saves, kohya's sshs hashes, the WebUI card sidecar."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save

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
    """Tensors and metadata of a LoRA .safetensors (pickle formats are refused)."""
    if path.suffix.lower() != ".safetensors":
        raise ModelError(f"{path}: only .safetensors LoRA files are loaded (pickle files can run code).")
    if not path.is_file():
        raise ModelError(f"LoRA file {path} does not exist.")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path} is not a readable .safetensors file ({exc}).") from None


def write_webui_sidecar(
    lora_path: Path,
    *,
    activation_text: str = "",
    preferred_weight: float = 0.8,
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
