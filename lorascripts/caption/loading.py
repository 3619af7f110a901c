"""Where a captioning model comes from and how it is loaded safely: local folders never touch the network,
remote code only when allowed, one clear error when loading fails. Below both the registry (`base.py`) and
every captioner, so imports go one way: base -> captioner -> loading."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError


@dataclass(frozen=True)
class ModelSource:
    """What every captioner is built from: the model (Hugging Face id or local folder), the device it runs on,
    the images per batch, and whether the model's own Python code may run."""

    model: str
    device: str
    batch_size: int = 4
    allow_remote_code: bool = False


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def looks_like_path(model: str) -> bool:
    """True for what can only be a local path (Hugging Face ids are `name` or `owner/name`)."""
    return model.startswith(("/", ".", "~")) or "\\" in model or ":" in model or model.count("/") > 1


def check_native(model: str, allow_remote_code: bool) -> None:
    """Refuse a missing local folder, and one whose config needs remote code unless explicitly allowed."""
    if looks_like_path(model) and not Path(model).expanduser().is_dir():
        raise ModelError(
            f"captioning model folder {model} does not exist. Check the path, or give a Hugging Face id."
        )
    config = Path(model) / "config.json"
    if not config.is_file():
        return
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config} is not valid JSON ({exc}). Re-download the model.") from None
    if isinstance(data, dict) and data.get("auto_map") and not allow_remote_code:
        raise ModelError(
            f"{model} ships its own Python code (auto_map in config.json), which lora-scripts does not run by "
            "default. Use a transformers-native version of the model, or pass --allow-remote-code if you trust it."
        )


def load_kwargs(model: str, allow_remote_code: bool) -> dict[str, Any]:
    """from_pretrained arguments: local folders never touch the network; remote code only when allowed."""
    kwargs: dict[str, Any] = {"trust_remote_code": allow_remote_code}
    if Path(model).is_dir():
        kwargs["local_files_only"] = True
    return kwargs


def load_pretrained(
    source: ModelSource,
    classes: tuple[Any, Any],
    *,
    what: str,
    hint: str = "",
    errors: tuple[type[BaseException], ...] = (OSError, ValueError),
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    """(processor, model) from the transformers `classes` (processor class, model class), checked first;
    a failure becomes "cannot load <what> <model>: <reason>. <hint>"."""
    model = source.model
    check_native(model, source.allow_remote_code)
    kwargs = load_kwargs(model, source.allow_remote_code)
    processor_cls, model_cls = classes
    try:
        return processor_cls.from_pretrained(model, **kwargs), model_cls.from_pretrained(
            model, **kwargs, **model_kwargs
        )
    except errors as exc:
        raise ModelError(f"cannot load {what} {model}: {exc}" + (f". {hint}" if hint else "")) from None
