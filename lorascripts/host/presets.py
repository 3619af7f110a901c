"""Starting points for the common jobs; every value can still be overridden (hosts show them as defaults).

With the config schema, the one source of the forms' defaults (`host/form.py`): a form field left at "the
preset's" takes the preset's value, and a key no preset sets takes the config schema's default (`TrainConfig`),
so the ComfyUI node, the WebUI tab and a YAML file without that key all train with the same value. Keys whose
value depends on the model (`train_text_encoder`: true for SD and FLUX.1, impossible for Z-Image) are left to the
family (models/run_defaults.py), so one preset fits every family.
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
    },
}


# what a form offers: a preset, or `custom` (the config schema's defaults)
PRESET_CHOICES = (*PRESETS, "custom")


def schema_default(key: str) -> Any:
    """The config schema's default for `key` (what a YAML file without the key trains with)."""
    import dataclasses

    from ..config import TrainConfig

    field = {f.name: f for f in dataclasses.fields(TrainConfig)}[key]
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def preset_summary(key: str) -> str:
    """`style 16, character 32, concept 8` for a tooltip."""
    return ", ".join(f"{name} {values.get(key, schema_default(key)):g}" for name, values in PRESETS.items())


def preset(name: str) -> dict[str, Any]:
    """A copy of a preset's settings (`custom` or an unknown name gives none)."""
    return dict(PRESETS.get(name, {}))
