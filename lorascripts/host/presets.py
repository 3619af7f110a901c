"""Starting points for the common jobs; every value can still be overridden (hosts show them as defaults)."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "style": {
        "lora_rank": 16,
        "lora_alpha": 8,
        "learning_rate": 1e-4,
        "text_encoder_lr": 5e-5,
        "epochs": 10,
        "network_type": "lora",
        "train_text_encoder": True,
        "noise_offset": 0.05,
        "min_snr_gamma": 5,
    },
    "character": {
        "lora_rank": 32,
        "lora_alpha": 16,
        "learning_rate": 1e-4,
        "text_encoder_lr": 5e-5,
        "epochs": 12,
        "network_type": "lora",
        "train_text_encoder": True,
        "shuffle_caption": True,
        "keep_tokens": 1,
    },
    "concept": {
        "lora_rank": 8,
        "lora_alpha": 4,
        "learning_rate": 2e-4,
        "text_encoder_lr": 1e-4,
        "epochs": 8,
        "network_type": "locon",
        "conv_rank": 4,
        "conv_alpha": 1,
        "train_text_encoder": True,
    },
}


def preset(name: str) -> dict[str, Any]:
    """A copy of a preset's settings (`custom` or an unknown name gives none)."""
    return dict(PRESETS.get(name, {}))


def merged_settings(preset_name: str, values: dict[str, Any], advanced_yaml: str = "") -> dict[str, Any]:
    """A host form's settings: preset, then the form's values, then the user's `key: value` YAML on top."""
    import yaml

    from ..errors import ConfigError

    try:
        extra = yaml.safe_load(advanced_yaml) if advanced_yaml.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"the advanced YAML does not parse: {exc}") from None
    if extra and not isinstance(extra, dict):
        raise ConfigError("the advanced YAML must be `key: value` lines (see the README's config reference).")
    return {**preset(preset_name), **values, **(extra or {})}
