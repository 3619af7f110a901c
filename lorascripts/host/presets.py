"""Starting points for the common jobs; every value can still be overridden (hosts show them as defaults).

The one source of the forms' defaults: a form field left at "the preset's" takes the preset's value, and a key
no preset sets takes the config schema's default (`TrainConfig`), so the ComfyUI node, the WebUI tab and a YAML
file without that key all train with the same value.
"""

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


# the keys both forms show as fields
FORM_KEYS = ("lora_rank", "lora_alpha", "learning_rate", "epochs", "preferred_weight")


def schema_default(key: str) -> Any:
    """The config schema's default for `key` (what a YAML file without the key trains with)."""
    import dataclasses

    from ..config import TrainConfig

    field = {f.name: f for f in dataclasses.fields(TrainConfig)}[key]
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def form_defaults(preset_name: str) -> dict[str, Any]:
    """What a form shows for `preset_name`: the preset's value of each form key, else the schema's."""
    chosen = preset(preset_name)
    return {key: chosen.get(key, schema_default(key)) for key in FORM_KEYS}


def preset_summary(key: str) -> str:
    """`style 16, character 32, concept 8` for a tooltip."""
    return ", ".join(f"{name} {values.get(key, schema_default(key)):g}" for name, values in PRESETS.items())


def preset(name: str) -> dict[str, Any]:
    """A copy of a preset's settings (`custom` or an unknown name gives none)."""
    return dict(PRESETS.get(name, {}))


def merged_settings(preset_name: str, values: dict[str, Any], advanced_yaml: str = "") -> dict[str, Any]:
    """A host form's settings: preset, then the form's values, then the user's `key: value` YAML on top.

    A form value of None means "the preset's" (the field was left as the preset set it) and is left out."""
    import yaml

    from ..errors import ConfigError

    try:
        extra = yaml.safe_load(advanced_yaml) if advanced_yaml.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"the advanced YAML does not parse: {exc}") from None
    if extra and not isinstance(extra, dict):
        raise ConfigError("the advanced YAML must be `key: value` lines (see the README's config reference).")
    chosen = {k: v for k, v in values.items() if v is not None}
    return {**preset(preset_name), **chosen, **(extra or {})}
