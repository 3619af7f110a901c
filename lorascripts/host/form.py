"""One host form -> one validated `TrainConfig`: the ComfyUI Train LoRA node and the WebUI tab both call
`form_config`, and the training job writes the object it returns for the child.

The form's fields are one table (`FIELDS`) whose defaults, ranges and help come from the config schema and the
presets, so the node's widgets, the tab's fields and a YAML file without the key train with the same value.
A field's *unset* value (None, or 0 where `zero` says what 0 means) leaves the key to the preset, else the
schema. Relative paths in the advanced YAML are resolved once here, against the host's root folder (`paths_base`:
the ComfyUI or WebUI folder), so the parent's validation and the training child read the same files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig, config_from_dict
from ..errors import ConfigError, LoraScriptsError
from .parts import part_settings
from .presets import PRESET_CHOICES, PRESETS, preset, preset_summary, schema_default
from .safety import check_request_config, path_keys


@dataclass(frozen=True)
class FormField:
    """One number a host form shows for a config key."""

    name: str  # the widget's / form field's name (kept stable: saved ComfyUI workflows address widgets by it)
    key: str  # the config key it sets
    kind: type  # int or float
    label: str
    maximum: float
    zero: str | None = None  # what 0 means ("the preset's"), or None when 0 is an ordinary value
    step: float | None = None
    in_node: bool = True  # shown on the ComfyUI node (adding a widget there would shift saved workflows)

    @property
    def meta(self) -> dict[str, Any]:
        return next(f.metadata for f in dataclasses.fields(TrainConfig) if f.name == self.key)

    @property
    def minimum(self) -> float:
        return 0 if self.zero else self.meta["min"]

    def shown(self, preset_name: str) -> Any:
        """The value the form shows for `preset_name`: the preset's, else the schema's (0 for 'unset')."""
        value = preset(preset_name).get(self.key, schema_default(self.key))
        return self.kind(value) if value not in (None, []) else self.kind(0)

    @property
    def node_default(self) -> Any:
        """A ComfyUI widget's default: 0 (= the preset's) where 0 has a meaning, else the schema's value."""
        return self.kind(0) if self.zero else self.shown("custom")

    @property
    def tooltip(self) -> str:
        by_preset = any(self.key in values for values in PRESETS.values())
        presets = f" Presets: {preset_summary(self.key)}." if by_preset else ""
        zero = f" 0: {self.zero}." if self.zero else ""
        return f"{self.meta['help']}{presets}{zero}"


PRESET_ZERO = "the preset's value (custom: the config default)"
FIELDS: tuple[FormField, ...] = (
    FormField("rank", "lora_rank", int, "Rank", 1024, zero=PRESET_ZERO),
    FormField("alpha", "lora_alpha", float, "Alpha", 1024.0, zero=PRESET_ZERO),
    FormField("steps", "max_train_steps", int, "Steps", 100_000, zero="train for `epochs`"),
    FormField("epochs", "epochs", int, "Epochs", 1000, zero=PRESET_ZERO),
    FormField("learning_rate", "learning_rate", float, "Learning rate", 1.0, zero=PRESET_ZERO, step=1e-5),
    FormField(
        "resolution",
        "resolution",
        int,
        "Resolution",
        2048,
        zero="the model family's (SD1 512, SDXL 1024)",
        step=64,
    ),
    FormField("batch_size", "batch_size", int, "Batch size", 64),
    FormField(
        "preferred_weight", "preferred_weight", float, "Preferred weight", 2.0, step=0.05, in_node=False
    ),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class ChoiceField:
    """A config key a host form shows as a list of its schema's choices."""

    name: str  # the widget's / form field's name (kept stable, as FormField.name)
    key: str
    label: str
    note: str = ""  # what the form adds to the schema's help

    @property
    def meta(self) -> dict[str, Any]:
        return next(f.metadata for f in dataclasses.fields(TrainConfig) if f.name == self.key)

    @property
    def choices(self) -> list[str]:
        return list(self.meta["choices"])

    @property
    def default(self) -> str:
        return str(schema_default(self.key))

    @property
    def tooltip(self) -> str:
        return f"{self.meta['help']}{self.note}"


CHOICE_FIELDS: tuple[ChoiceField, ...] = (
    ChoiceField(
        "memory_preset",
        "memory_preset",
        "Memory preset",
        note=" Leave off for SD1/SD2/SDXL checkpoints (their U-Nets have no blocks to swap).",
    ),
)
CHOICE_BY_NAME = {f.name: f for f in CHOICE_FIELDS}


def form_defaults(preset_name: str) -> dict[str, Any]:
    """What a form shows for `preset_name`, by config key (the preset's value, else the schema's)."""
    return {f.key: f.shown(preset_name) for f in FIELDS}


@dataclass(frozen=True)
class RequestRoots:
    """Where a request from a network-facing host may make us read and write (see `safety.py`)."""

    read: Sequence[Path]
    write: Sequence[Path]
    approved: Sequence[Path] = ()  # folders the host itself chose (e.g. its bundled tokenizer)


@dataclass
class HostForm:
    """What a host form holds once the host has turned its choices into paths."""

    base_model: str  # a checkpoint file or diffusers folder the host resolved
    dataset: str  # the dataset folder
    paths_base: Path  # relative paths in the advanced YAML are taken from here (the host's root folder)
    output_dir: str  # where the run works (the job replaces it with its own folder)
    preset: str = "style"
    values: Mapping[str, Any] = field(default_factory=dict)  # FIELDS name -> value; None/0 (zero) = unset
    choices: Mapping[str, str] = field(default_factory=dict)  # CHOICE_FIELDS name -> value; '' / None = unset
    parts: Mapping[str, str | None] = field(
        default_factory=dict
    )  # part-file key -> path (parts.py); None = found
    trigger_word: str = ""
    sample_prompt: str = ""
    advanced_yaml: str = ""
    metadata_path: str | None = None
    tokenizer_path: str | None = None
    roots: RequestRoots | None = None  # confine the request's paths to these (a network-facing host)


def _advanced(text: str) -> dict[str, Any]:
    import yaml

    try:
        extra = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"the advanced YAML does not parse: {exc}") from None
    if extra and not isinstance(extra, dict):
        raise ConfigError("the advanced YAML must be `key: value` lines (see the README's config reference).")
    return extra or {}


def _field_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The form's numbers as config keys; unset ones (None, '', or 0 where 0 means 'the preset's') left out."""
    unknown = set(values) - set(FIELD_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown form fields {sorted(unknown)}; known: {', '.join(FIELD_BY_NAME)}.")
    out = {}
    for name, value in values.items():
        spec = FIELD_BY_NAME[name]
        try:
            if value is None or value == "" or (spec.zero and not float(value)):
                continue
            out[spec.key] = spec.kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{spec.label} must be a number, got {value!r}.") from None
    return out


def _choice_values(choices: Mapping[str, str]) -> dict[str, str]:
    """The form's list choices as config keys (the config checks the value against the key's choices)."""
    unknown = set(choices) - set(CHOICE_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown form choices {sorted(unknown)}; known: {', '.join(CHOICE_BY_NAME)}.")
    return {CHOICE_BY_NAME[name].key: value for name, value in choices.items() if value}


def _takes_clip_tokenizer(base_model: str) -> bool:
    """Whether the host's bundled CLIP tokenizer may be the model's `tokenizer_path`: not for a single file of a
    family with another tokenizer (Z-Image's Qwen3), which finds its own. A file no family claims, or one that
    cannot be read, keeps it (the loader then names the problem)."""
    from ..models.families import family_of_checkpoint
    from ..models.files import safetensors_shapes

    path = Path(base_model)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return True  # a diffusers folder carries its own tokenizers
    try:
        family = family_of_checkpoint(list(safetensors_shapes(path)))
    except LoraScriptsError:
        return True
    return family is None or family.reads_clip_tokenizer


def form_settings(form: HostForm) -> dict[str, Any]:
    """Preset, then the form's fields and what they imply, then the advanced YAML on top (a plain mapping)."""
    chosen = {**_field_values(form.values), **_choice_values(form.choices), **part_settings(form.parts)}
    steps = chosen.get("max_train_steps")
    derived: dict[str, Any] = {"log_every_n_steps": 1, "trigger_word": form.trigger_word.strip()}
    if steps:
        derived["save_steps"] = max(1, steps // 4)
    if form.sample_prompt.strip():
        derived.update(
            sample_prompts=[form.sample_prompt.strip()], sample_every_n_steps=max(1, (steps or 100) // 4)
        )
    settings = {**preset(form.preset), **derived, **chosen, **_advanced(form.advanced_yaml)}
    if form.tokenizer_path and "tokenizer_path" not in settings and _takes_clip_tokenizer(form.base_model):
        settings["tokenizer_path"] = form.tokenizer_path
    # what the host chose wins (a network-facing host also refuses an alias that tries to change it)
    fixed = {"base_model": form.base_model, "train_data_dir": form.dataset, "output_dir": form.output_dir}
    if form.metadata_path:
        fixed["metadata_path"] = form.metadata_path
    return {**settings, **fixed}


def _rooted(cfg: TrainConfig, base: Path) -> TrainConfig:
    """Every relative path of the config taken from `base` (never from the process's working folder, which
    differs between the host and the training child)."""
    changes = {}
    for key in path_keys():
        value = getattr(cfg, key)
        if value and not Path(os.path.expanduser(str(value))).is_absolute():
            changes[key] = os.path.normpath(base / os.path.expanduser(str(value)))
    return dataclasses.replace(cfg, **changes) if changes else cfg


def form_config(form: HostForm, source: str = "the form") -> TrainConfig:
    """The validated training config for a host form (errors name the key and the fix)."""
    if form.preset not in PRESET_CHOICES:
        raise ConfigError(f"unknown preset {form.preset!r}; choose one of {', '.join(PRESET_CHOICES)}.")
    settings = form_settings(form)
    if settings.get("task", "image") != "image":  # before the preset's image keys confuse the text trainer
        raise ConfigError(f"{source} trains image LoRAs; remove `task` from the advanced YAML.")
    cfg = config_from_dict(settings, source=source)
    cfg = _rooted(cfg, Path(form.paths_base))
    if form.roots is not None:
        fixed = {"base_model": form.base_model, "train_data_dir": form.dataset}
        approved = [Path(form.dataset), *([Path(form.tokenizer_path)] if form.tokenizer_path else [])]
        check_request_config(cfg, fixed, form.roots.read, form.roots.write, [*approved, *form.roots.approved])
    return cfg
