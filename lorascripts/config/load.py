"""YAML in, typed TrainConfig / LLMConfig out (and back): aliases, migrations, `--set` overrides."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..fileio import atomic_write_text
from .base import CONFIG_VERSION, unset_zero
from .fields import field_meta
from .llm import LLMConfig
from .schema import TrainConfig
from .validate import check_range, coerce, field_types, short_repr, suggest

logger = logging.getLogger(__name__)


def _alias_table(cls: type = TrainConfig) -> dict[str, str]:
    table = {}
    for f in dataclasses.fields(cls):
        table[f.name] = f.name
        for alias in field_meta(f)["aliases"]:
            table[alias] = f.name
    return table


def _migrate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Upgrade older config versions in place. Version 1 is the first; future versions add steps here."""
    version = raw.get("config_version", CONFIG_VERSION)
    if not isinstance(version, int) or version < 1:
        raise ConfigError(
            f"{source}: `config_version` must be a positive integer, got {short_repr(version)}."
        )
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{source}: config_version {version} is newer than this lora-scripts understands ({CONFIG_VERSION}). "
            "Update lora-scripts or lower config_version."
        )
    raw["config_version"] = CONFIG_VERSION
    return raw


def _special_values(key: str, value: Any) -> Any:
    value = unset_zero(key, value)
    # kohya spells v-prediction as a boolean flag; lora-scripts spells it as a choice.
    if key == "prediction_type" and isinstance(value, bool):
        return "v_prediction" if value else "epsilon"
    if key == "cache_latents" or key == "cache_text_encoder_outputs":
        if isinstance(value, bool):
            return "memory" if value else "off"
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return "memory" if value.lower() == "true" else "off"
    if key == "resolution" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return [int(value)]
    if key == "resolution" and isinstance(value, str):
        return [int(v) for v in re.split(r"[x,\s]+", value.strip()) if v]
    if key == "network_type" and isinstance(value, str):
        known = {"networks.lora": "lora", "lycoris.kohya": "locon", "lora_c3lier": "locon"}
        return known.get(value.lower(), value.lower())
    if key in (
        "optimizer",
        "lr_scheduler",
        "mixed_precision",
        "model_family",
        "save_precision",
    ) and isinstance(value, str):
        return value.lower()
    if key == "caption_extensions":
        return _caption_extensions(value)
    if key == "resume" and (value is None or value is False):
        return "none"
    if key == "resume" and value is True:
        return "auto"
    return value


def _caption_extensions(value: Any) -> Any:
    """`txt`, `.txt`, `[txt, caption]` all mean the sidecar suffixes `.txt`/`.caption` (kohya writes the dot,
    many users do not); a value that is not a plain suffix is refused here rather than by pathlib later."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        return value  # coerce() names the wrong type
    out = []
    for item in items:
        if not isinstance(item, str):
            return value
        text = item.strip()
        suffix = text if text.startswith(".") else f".{text}"
        if not re.fullmatch(r"\.[^./\\\s\x00]+", suffix):
            raise ConfigError(
                f"`caption_extensions` entries must be file suffixes such as .txt or .caption; got {short_repr(item)}."
            )
        out.append(suffix)
    return out


def _special(special: Any, name: str, value: Any) -> Any:
    """Apply a field's special spellings; one that does not parse (`resolution: 512xabc`) is a ConfigError."""
    try:
        return special(name, value)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(
            f"`{name}` cannot be read from {short_repr(value)}. See the README's config reference for examples."
        ) from None


def fill_fields(
    cls: type,
    raw: Mapping[str, Any],
    source: str,
    base_dir: Path | None,
    special: Any = lambda key, value: value,
) -> dict[str, Any]:
    """Validated field values of dataclass `cls` from a mapping: aliases, types, ranges, paths, "did you mean"."""
    aliases = _alias_table(cls)
    types_ = field_types(cls)
    metas = {f.name: field_meta(f) for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in raw.items():
        name = aliases.get(str(key))
        if name is None:
            raise ConfigError(
                f"{source}: unknown key `{key}`.{suggest(str(key), list(aliases))} "
                "See the README's config reference for all keys."
            )
        if name in spelled:
            raise ConfigError(f"{source}: `{spelled[name]}` and `{key}` mean the same thing; keep only one.")
        spelled[name] = str(key)
        try:
            value = coerce(name, _special(special, name, value), types_[name])
            check_range(name, value, metas[name])
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        values[name] = value
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and not values.get(f.name):
            raise ConfigError(f"{source}: `{f.name}` is required. {metas[f.name]['help']}")
    for name, meta in metas.items():
        if meta["path"] and values.get(name):
            value = values[name]
            resolved = [
                _resolve_path(str(v), base_dir) for v in (value if isinstance(value, list) else [value])
            ]
            values[name] = resolved if isinstance(value, list) else resolved[0]
    return values


def config_from_dict(raw: Mapping[str, Any], *, source: str = "config", base_dir: Path | None = None) -> Any:
    """Build and validate a TrainConfig (or, with `task: llm`, an LLMConfig) from a plain mapping (parsed YAML,
    node widgets, a WebUI form)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{source}: the config must be a mapping of `key: value` lines, got {type(raw).__name__}."
        )
    raw = _migrate(dict(raw), source)
    if raw.get("task") == "llm":
        cls, values = LLMConfig, fill_fields(LLMConfig, raw, source, base_dir, unset_zero)
    else:
        values = fill_fields(TrainConfig, _flatten_nested(raw, source), source, base_dir, _special_values)
        cls = TrainConfig
    if base_dir is not None and values.get("base_model"):
        # base_model may also be a repo id or `toy`: only treat it as relative to the config when a file is there
        candidate = base_dir / str(values["base_model"])
        if not Path(values["base_model"]).exists() and candidate.exists():
            values["base_model"] = str(candidate)
    try:
        return cls(**values)  # the object checks itself (__post_init__): the cross-key rules run there
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


NESTED_KEYS = {"ema": ("decay", "start_step", "update_every", "device", "save", "samples")}


def _flatten_nested(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """`ema: {decay: 0.999}` is the same as `ema_decay: 0.999` (the issue's and ai-toolkit's spelling)."""
    out = dict(raw)
    for group, names in NESTED_KEYS.items():
        if group not in out:
            continue
        value = out.pop(group)
        if value is None or value is False:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{source}: `{group}` must be a mapping such as `{group}: {{decay: 0.999}}`, got {short_repr(value)}."
            )
        for key, inner in value.items():
            if key not in names:
                raise ConfigError(
                    f"{source}: unknown key `{group}.{key}`.{suggest(str(key), list(names))} Known: {', '.join(names)}."
                )
            flat = f"{group}_{key}"
            if flat in out:
                raise ConfigError(
                    f"{source}: `{group}.{key}` and `{flat}` mean the same thing; keep only one."
                )
            out[flat] = inner
    return out


def _resolve_path(value: str, base_dir: Path | None) -> str:
    """Relative paths are taken from the working directory; if nothing is there, from the config's folder."""
    path = Path(os.path.expanduser(value))
    if path.is_absolute() or path.exists() or base_dir is None:
        return str(path)
    candidate = Path(os.path.normpath(base_dir / path))  # base_dir is resolved: `..` cannot cross a link
    return str(candidate) if candidate.exists() else str(path)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`--set key=value` strings to a mapping; values are parsed as YAML (so 1e-4, true, [a, b] work)."""
    result: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}. Example: --set learning_rate=1e-4")
        key, _, text = item.partition("=")
        try:
            result[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            result[key.strip()] = text
    return result


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice (plain PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(
                    f"{self.name}, lines {seen[key]} and {line}: `{key}` is set twice. Keep only one of them."
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML config file, turning every failure into a ConfigError that names the file and line."""
    if path.is_dir():
        raise ConfigError(f"Config file {path} is a folder; give the path of a .yaml file in it.")
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist. Check the path, or copy one from configs/.")
    try:
        loader = _UniqueKeyLoader(path.read_text(encoding="utf-8"))
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text. Save it as UTF-8.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}).") from None
    if data is None:
        raise ConfigError(f"{path} is empty. It needs at least `base_model:` and `train_data_dir:`.")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of `key: value` lines.")
    return data


def load_config(path: str | Path | None, overrides: Iterable[str] | Mapping[str, Any] = ()) -> Any:
    """Load a YAML config file (or none) and apply `--set` overrides; validate everything."""
    raw: dict[str, Any] = {}
    base_dir = None
    source = "command line"
    if path is not None:
        path = Path(path)
        raw = read_yaml(path)
        base_dir = path.resolve().parent
        source = str(path)
    extra = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    aliases = _alias_table(LLMConfig if raw.get("task", extra.get("task")) == "llm" else TrainConfig)
    for key, value in extra.items():
        # an override replaces the key and any alias spelling of it already in the file
        name = aliases.get(key, key)
        for existing in [k for k in raw if aliases.get(k) == name]:
            del raw[existing]
        raw[key] = value
    return config_from_dict(raw, source=source, base_dir=base_dir)


def dump_config(cfg: TrainConfig) -> str:
    """YAML text of the resolved config (every key, in declaration order)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def save_config(cfg: TrainConfig, path: Path) -> None:
    """Write the resolved config next to an output, atomically."""
    # fileio's temporary file is opened like any other (mode from the umask), not 0600 as mkstemp's would be
    atomic_write_text(path, dump_config(cfg))
