"""The registry of model families: the one place that lists them.

Adding a family = a module (or package) here with a `Family` subclass, one line in `REGISTERED`, and its tests
(docs/ARCHITECTURE.md, "How to add a family"). Detection asks each family in order, so a family whose files
are a superset of another's must come first.

The table names modules instead of importing them: the config offers `family_names()` as `model_family`
choices without loading torch or any family's code; a family's module is imported the first time it is asked for.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, Any

from ...errors import ModelError

if TYPE_CHECKING:
    from .base import BaseModel, Family, LoadedParts, Objective, StepNoise

# family name -> "module:class" inside this package, in detection order
REGISTERED: dict[str, str] = {
    "flux1": "flux1:Flux1",
    "zimage": "zimage:ZImage",
    "sdxl": "sdxl:SDXL",
    "sd2": "sd2:SD2",
    "sd1": "sd1:SD1",
}
_BASE_NAMES = ("BaseModel", "Family", "LoadedParts", "Objective", "StepNoise")


def __getattr__(name: str) -> Any:
    """The protocol types (`BaseModel`, `Family`, ...) load with torch, on first use."""
    if name in _BASE_NAMES:
        return getattr(importlib.import_module(".base", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def all_families() -> tuple[Family, ...]:
    """Every registered family, instantiated once, in detection order."""
    found = []
    for where in REGISTERED.values():
        module, _, cls = where.partition(":")
        found.append(getattr(importlib.import_module(f".{module}", __name__), cls)())
    return tuple(found)


__all__ = [
    "BaseModel",
    "Family",
    "LoadedParts",
    "Objective",
    "StepNoise",
    "all_families",
    "family_names",
    "get_family",
    "known_kinds",
    "family_of_checkpoint",
    "family_of_diffusers",
]


def family_names() -> tuple[str, ...]:
    """Config values of `model_family` (besides `auto`), in the order users read them."""
    return tuple(sorted(REGISTERED))


def get_family(name: str) -> Family:
    """The family called `name` (sd1, sd2, sdxl, ...)."""
    for family in all_families():
        if family.name == name:
            return family
    raise ModelError(f"unknown model family {name!r}; choose one of {', '.join(family_names())}.")


def known_kinds() -> str:
    """The families we train, as messages name them ("Stable Diffusion 1.x/2.x/XL, ...")."""
    return ", ".join(dict.fromkeys(f.kind_label for f in sorted(all_families(), key=lambda f: f.name)))


def family_of_checkpoint(keys: set[str] | list[str]) -> Family | None:
    """The family of a single-file checkpoint, from its key names; None when no family claims it."""
    keyset = set(keys)
    return next((f for f in all_families() if f.claims_checkpoint(keyset)), None)


def family_of_diffusers(source: str, index: dict[str, Any], local_only: bool) -> Family | None:
    """The family of a diffusers folder / cached repo with this model_index.json."""
    return next((f for f in all_families() if f.claims_diffusers(source, index, local_only)), None)
