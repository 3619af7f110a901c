"""Cross-key rules of the image config that single-key validation cannot express (run by
`TrainConfig.__post_init__`, so YAML, host forms and Python get the same refusals in the same words)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .validate import suggest

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "ff", "proj_in", "proj_out")

# target_modules names people use, mapped to the leaf-module names they select in the U-Net and text encoder.
TARGET_ALIASES: dict[str, str] = {
    "q_proj": "q_proj",
    "to_q": "q_proj",
    "q": "q_proj",
    "k_proj": "k_proj",
    "to_k": "k_proj",
    "k": "k_proj",
    "v_proj": "v_proj",
    "to_v": "v_proj",
    "v": "v_proj",
    "out_proj": "out_proj",
    "to_out": "out_proj",
    "o_proj": "out_proj",
    "to_out.0": "out_proj",
    "fc1": "fc1",
    "fc2": "fc2",
    "mlp": "mlp",
    "ff": "ff",
    "ff_net": "ff",
    "proj_in": "proj_in",
    "proj_out": "proj_out",
    "attn": "attn",
    "modulation": "mod",  # FLUX's img_mod/txt_mod/modulation layers (kohya leaves them out by default)
    "mod": "mod",
    "all": "all",
    "default": "all",
}


def check_consistency(cfg: Any) -> None:
    """Cross-key rules that single-key validation cannot express."""
    if len(cfg.resolution) not in (0, 1, 2):
        raise ConfigError(f"`resolution` must be one number or [width, height]; got {cfg.resolution}.")
    if any(r < 8 or r % 8 for r in cfg.resolution):
        raise ConfigError(f"`resolution` sides must be multiples of 8 and at least 8; got {cfg.resolution}.")
    if cfg.min_bucket_reso > cfg.max_bucket_reso:
        raise ConfigError(
            f"`min_bucket_reso` ({cfg.min_bucket_reso}) is larger than `max_bucket_reso` "
            f"({cfg.max_bucket_reso}). Swap them."
        )
    unknown = [t for t in cfg.target_modules if t not in TARGET_ALIASES]
    if unknown:
        raise ConfigError(
            f"`target_modules` has unknown names {unknown}.{suggest(unknown[0], list(TARGET_ALIASES))} "
            f"Known: {', '.join(DEFAULT_TARGET_MODULES)} (or `all`)."
        )
    if cfg.cache_text_encoder_outputs not in (None, "off") and cfg.train_text_encoder:
        raise ConfigError(
            "`cache_text_encoder_outputs` needs a frozen text encoder, but `train_text_encoder` is true. "
            "Set train_text_encoder: false, or cache_text_encoder_outputs: off."
        )
    if cfg.flip_aug and cfg.cache_latents != "off":
        raise ConfigError(
            "`flip_aug` changes the image every time, so latents cannot be cached. "
            "Set cache_latents: off, or flip_aug: false."
        )
    if cfg.output_name and not re.fullmatch(r"[^/\\:*?\"<>|\x00-\x1f]+", cfg.output_name):
        raise ConfigError(
            f"`output_name` {cfg.output_name!r} is not a valid file name; use letters, digits, '-' and '_'."
        )
    if cfg.output_format == "diffusers" and cfg.network_type not in ("lora", "locon"):
        raise ConfigError(
            f"`output_format: diffusers` holds plain LoRA factors only (PEFT's lora_A/lora_B), not "
            f"network_type {cfg.network_type}. Use network_type: lora, or output_format: kohya."
        )
    if cfg.base_weights_multiplier and len(cfg.base_weights_multiplier) != len(cfg.base_weights):
        raise ConfigError(
            f"`base_weights_multiplier` has {len(cfg.base_weights_multiplier)} values for "
            f"{len(cfg.base_weights)} `base_weights` files; give one per file, in the same order (or none: 1.0 each)."
        )
    _check_validation(cfg)
    _check_memory(cfg)
    missing = [root for root in cfg.tokenizer_roots if not Path(os.path.expanduser(root)).is_dir()]
    if missing:
        raise ConfigError(
            f"`tokenizer_roots` holds {missing[0]!r}, which is not a folder; give folders that exist (where a "
            "host keeps its tokenizers, e.g. ComfyUI's `comfy` folder) or remove the entry."
        )
    if cfg.resume not in ("none", "auto") and not Path(cfg.resume).exists():
        raise ConfigError(
            f"`resume` must be none, auto or an existing checkpoint folder; {cfg.resume!r} does not exist."
        )


def _check_validation(cfg: Any) -> None:
    if cfg.validation_dir and cfg.validation_split:
        raise ConfigError(
            "`validation_split` and `validation_dir` both choose validation images; keep only one."
        )
    if cfg.validation_split > 1 and not float(cfg.validation_split).is_integer():
        raise ConfigError(
            f"`validation_split` is a fraction below 1 or a whole count of images; got {cfg.validation_split}."
        )
    if cfg.early_stopping_patience and not (cfg.validation_dir or cfg.validation_split):
        raise ConfigError(
            "`early_stopping_patience` needs a validation loss: set validation_split (e.g. 0.1) or "
            "validation_dir, or set early_stopping_patience: 0."
        )


def _check_memory(cfg: Any) -> None:
    if not cfg.blocks_to_swap:
        return
    if cfg.torch_compile:
        raise ConfigError(
            "`blocks_to_swap` moves weights while the model runs, which torch_compile cannot trace; "
            "set torch_compile: false or blocks_to_swap: 0."
        )
    if not cfg.gradient_checkpointing and cfg.memory_preset == "off":
        raise ConfigError(
            "`blocks_to_swap` needs gradient_checkpointing: true (without it the activations kept for backward "
            "hold every swapped block's weights on the device, so nothing is saved)."
        )
