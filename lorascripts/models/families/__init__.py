"""The registry of model families: the one place that lists them.

Adding a family = a module (or package) here with a `Family` subclass, one line in `_FAMILIES`, and its tests
(docs/ARCHITECTURE.md, "How to add a family"). Detection asks each family in order, so a family whose files
are a superset of another's must come first.
"""

from __future__ import annotations

from typing import Any

from ...errors import ModelError
from .base import BaseModel, Family, LoadedParts, Objective, StepNoise
from .flux1 import Flux1
from .sd1 import SD1
from .sd2 import SD2
from .sdxl import SDXL

_FAMILIES: tuple[Family, ...] = (Flux1(), SDXL(), SD2(), SD1())

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


def all_families() -> tuple[Family, ...]:
    return _FAMILIES


def family_names() -> tuple[str, ...]:
    """Config values of `model_family` (besides `auto`), in the order users read them."""
    return tuple(sorted(f.name for f in _FAMILIES))


def get_family(name: str) -> Family:
    """The family called `name` (sd1, sd2, sdxl, ...)."""
    for family in _FAMILIES:
        if family.name == name:
            return family
    raise ModelError(f"unknown model family {name!r}; choose one of {', '.join(family_names())}.")


def known_kinds() -> str:
    """The families we train, as messages name them ("Stable Diffusion 1.x/2.x/XL, ...")."""
    return ", ".join(dict.fromkeys(f.kind_label for f in sorted(_FAMILIES, key=lambda f: f.name)))


def family_of_checkpoint(keys: set[str] | list[str]) -> Family | None:
    """The family of a single-file checkpoint, from its key names; None when no family claims it."""
    keyset = set(keys)
    return next((f for f in _FAMILIES if f.claims_checkpoint(keyset)), None)


def family_of_diffusers(source: str, index: dict[str, Any], local_only: bool) -> Family | None:
    """The family of a diffusers folder / cached repo with this model_index.json."""
    return next((f for f in _FAMILIES if f.claims_diffusers(source, index, local_only)), None)
