"""What a training result depends on, as one hash: same dataset bytes + same settings + same base model =
same LoRA, so hosts can reuse a finished file instead of training again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..fileio import file_sha256

# keys that change where and how a run reports, not what it learns
VOLATILE_KEYS = {
    "output_dir",
    "resume",
    "logging",
    "log_every_n_steps",
    "sample_prompts",
    "sample_every_n_steps",
    "sample_steps",
    "sample_guidance_scale",
    "sample_seed",
    "cache_dir",
    "keep_last_n",
    "save_steps",
    "save_every_n_epochs",
    "dataset_checks",
    "num_workers",
}


def dataset_digest(folder: Path) -> str:
    """Hash of every file's name and bytes under the dataset folder (images and captions)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(file_sha256(path).encode())
    return h.hexdigest()


def base_model_identity(source: str) -> str:
    path = Path(source)
    if path.is_file():
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}"
    if path.is_dir():
        return "|".join(f"{p.name}:{p.stat().st_size}" for p in sorted(path.rglob("*.safetensors")))
    return source


def training_fingerprint(config: dict[str, Any]) -> str:
    """Fingerprint of a training config dict (train_data_dir and base_model by content/identity)."""
    settings = {k: v for k, v in sorted(config.items()) if k not in VOLATILE_KEYS}
    metadata = Path(str(config.get("metadata_path") or ""))
    parts = {
        "settings": settings,
        "dataset": dataset_digest(Path(config["train_data_dir"])),
        "captions": file_sha256(metadata) if config.get("metadata_path") and metadata.is_file() else None,
        "base_model": base_model_identity(str(config["base_model"])),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
