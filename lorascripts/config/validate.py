"""Coercion and validation of raw config values against the declared fields.

Every message names the key, the bad value and the fix, because it is shown as-is in a terminal, a ComfyUI
dialog or the WebUI tab.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import reprlib
import types
import typing
from typing import Any, Union

from ..errors import ConfigError

_NONE_STRINGS = {"none", "null", "~", ""}


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 6, 6, 2


def short_repr(value: Any, limit: int = 160) -> str:
    """repr() cut to a readable length (a YAML alias bomb or a pasted blob must not flood the message)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def suggest(name: str, candidates: list[str]) -> str:
    """' Did you mean `x`?' for the closest candidate, or ''."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""


def _split_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    tp, optional = _split_optional(tp)
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        name = f"a list of {getattr(inner, '__name__', 'values')}"
    elif origin is dict:
        name = "a mapping"
    else:
        name = {bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(tp, str(tp))
    return name + (" (or null)" if optional else "")


def _coerce_scalar(key: str, value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (
            "true",
            "yes",
            "on",
            "1",
            "false",
            "no",
            "off",
            "0",
        ):
            return value.strip().lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(float(value)) if float(value).is_integer() else int(value)
        if isinstance(value, int):
            return value
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError
        return _plain_text(key, str(value))
    return value


def _plain_text(key: str, text: str) -> str:
    """Text every later consumer can take: YAML's "\\ud800" escape gives a lone surrogate that no file name,
    UTF-8 metadata or tokenizer accepts, and a NUL ends a path inside the OS."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"`{key}` holds a lone surrogate escape ({text[exc.start]!r}); write the character itself."
        ) from None
    if "\x00" in text:
        raise ConfigError(f"`{key}` holds a NUL character (\\x00); remove it.")
    return text


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert `value` (from YAML or a `--set` string) to the field type `tp`, or raise ConfigError."""
    inner, optional = _split_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE_STRINGS):
        if optional:
            return None
        raise ConfigError(
            f"`{key}` must be {_type_name(tp)}, got nothing (null). Give it a value or remove the line."
        )
    try:
        origin = typing.get_origin(inner)
        if origin is list:
            (item_tp,) = typing.get_args(inner) or (Any,)
            items = value if isinstance(value, (list, tuple)) else [value]
            if isinstance(value, str) and "," in value and item_tp is not str:
                items = [v.strip() for v in value.split(",")]
            return [_coerce_scalar(key, v, item_tp) for v in items]
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        return _coerce_scalar(key, value, inner)
    except (ValueError, TypeError):
        raise ConfigError(
            f"`{key}` must be {_type_name(tp)}, got {short_repr(value)} ({type(value).__name__}). "
            f"Example: `{key}: {_example(tp)}`."
        ) from None


def _example(tp: Any) -> str:
    inner, _ = _split_optional(tp)
    origin = typing.get_origin(inner)
    if origin is list:
        return "[a, b]"
    if origin is dict:
        return "{name: value}"
    return {bool: "true", int: "10", float: "0.0001", str: "text"}.get(inner, "...")


def _number(value: float) -> str:
    """A number as the user wrote it, or in scientific notation when it is long (`1e300`, not 301 digits)."""
    text = str(value)
    return text if len(text) <= 20 else f"{float(value):.3g}"


def check_range(key: str, value: Any, meta: dict[str, Any]) -> None:
    """Raise ConfigError when `value` violates the field's choices or min/max."""
    if value is None:
        return
    choices = meta.get("choices")
    values = value if isinstance(value, list) else [value]
    if choices:
        for v in values:
            if v not in choices:
                hint = suggest(str(v), [str(c) for c in choices])
                raise ConfigError(
                    f"`{key}` must be one of {', '.join(map(str, choices))}; got {short_repr(v)}.{hint}"
                )
    lo, hi = meta.get("min"), meta.get("max")
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"`{key}` must be a finite number; got {v}. Give a number or remove the line.")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise ConfigError(
                    f"`{key}` must be at least {lo}; got {_number(v)}. Raise it or remove the line for the default."
                )
            if hi is not None and v > hi:
                raise ConfigError(
                    f"`{key}` must be at most {hi}; got {_number(v)}. Lower it or remove the line for the default."
                )


@functools.cache  # every config object's __post_init__ asks; the answer never changes for a class
def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass (the module uses postponed annotations); do not mutate the result."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}
