"""Everything a run needs before its first step: output folder, logging, dataset, base model."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

BUILTIN_MODELS = ("toy",)


def use_channels_last(setting: str, device_type: str, weight_dtype: torch.dtype) -> bool:
    """`channels_last: auto` is on where it was measured to help: bf16 convolutions on CPU (oneDNN's layout)."""
    if setting != "auto":
        return setting == "on"
    return device_type == "cpu" and weight_dtype == torch.bfloat16


def resolve_base_model(name: str) -> str:
    """Map built-in names (`toy`) to their folders; anything else is passed through."""
    if name == "toy":
        from ..toy import TOY_MODEL_DIR

        return str(TOY_MODEL_DIR)
    return name


def check_model_limits(cfg: TrainConfig, base: Any) -> None:
    """Config values whose range depends on the loaded model, checked as soon as it is loaded."""
    depth = base.family.clip_skip_limit(base)
    if cfg.clip_skip > depth:
        raise ConfigError(
            f"`clip_skip` is {cfg.clip_skip}, but the text encoder of {cfg.base_model} has only {depth} layers. "
            f"Use a value from 1 to {depth} (SD1 anime models use 2)."
        )
    formats = base.family.lora_output_formats
    if cfg.output_format not in formats:
        raise ConfigError(
            f"`output_format: {cfg.output_format}` is not available for {base.family.label} LoRAs (only "
            f"{', '.join(formats)}): their loaders read kohya keys. Set output_format: kohya; "
            "`python -m lorascripts lora convert --to diffusers` converts the file afterwards."
        )


def output_name_for(cfg: TrainConfig) -> str:
    """The LoRA file stem: `output_name`, or the dataset folder's name without a kohya repeat prefix."""
    if cfg.output_name:
        return cfg.output_name
    folder = Path(cfg.train_data_dir).resolve().name
    head, _, tail = folder.partition("_")
    return tail if head.isdigit() and tail else folder


def prepare_output_dir(cfg: TrainConfig) -> Path:
    """Create the output folder, or explain why it cannot be used."""
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"output_dir {out} cannot be created ({exc.strerror}). Choose a writable folder."
        ) from None
    if not os.access(out, os.W_OK):
        raise ConfigError(f"output_dir {out} is not writable. Choose another folder.")
    lora = out / f"{output_name_for(cfg)}.safetensors"
    inputs = {"initial_lora": cfg.initial_lora, "base_model": cfg.base_model}
    for key, value in inputs.items():
        if value and Path(value).is_file() and lora.exists() and os.path.samefile(value, lora):
            raise ConfigError(
                f"`{key}` {value} is the file this run would write ({lora}): the output must not replace an input. "
                "Set another `output_name` (or output_dir)."
            )
    return out


def attach_log_file(out: Path) -> logging.Handler:
    """Mirror the engine's log to <output_dir>/train.log (removed again at the end of the run)."""
    handler = logging.FileHandler(out / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("lorascripts").addHandler(handler)
    return handler


def scan(cfg: TrainConfig) -> object:
    """Scan the dataset with the configured caption and bad-image policies."""
    from ..data.sources import scan_dataset

    data_dir = Path(cfg.train_data_dir)
    if not data_dir.is_dir():
        raise DatasetError(
            f"train_data_dir {data_dir} is not a folder. Point it at the folder with your images."
        )
    result = scan_dataset(
        data_dir,
        metadata_path=Path(cfg.metadata_path) if cfg.metadata_path else None,
        caption_extensions=tuple(cfg.caption_extensions),
        missing_captions=cfg.missing_captions,
        trigger_word=cfg.trigger_word,
        bad_images=cfg.bad_images,
    )
    for warning in getattr(result, "warnings", []):
        logger.warning("%s", warning)
    return result


def resolution_for(cfg: TrainConfig, default: int) -> tuple[int, int]:
    """(width, height) of the training area."""
    if not cfg.resolution:
        return default, default
    if len(cfg.resolution) == 1:
        return cfg.resolution[0], cfg.resolution[0]
    return cfg.resolution[0], cfg.resolution[1]
