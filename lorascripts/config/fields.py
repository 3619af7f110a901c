"""Field declarations for the typed config: help text, choices, ranges and aliases live next to each field.

`option()` wraps `dataclasses.field` so that validation, `--set` parsing, "did you mean" suggestions and the
generated config reference all read the same metadata: one source of truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    help: str,
    section: str,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    aliases: Sequence[str] = (),
    path: bool = False,
    default_factory: Any = _MISSING,
) -> Any:
    """Declare one config key.

    `path=True` marks keys whose value is a filesystem path (resolved against the working directory, then the
    config file's folder). `aliases` are the names people know from kohya / the lora-scripts articles.
    """
    meta = {
        "help": help,
        "section": section,
        "choices": tuple(choices) if choices is not None else None,
        "min": min,
        "max": max,
        "aliases": tuple(aliases),
        "path": path,
    }
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_meta(f: dataclasses.Field) -> dict[str, Any]:
    """The metadata dict of a field declared with `option()`."""
    return dict(f.metadata)
