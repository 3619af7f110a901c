"""Base models: the family seam (`families/`), loading (single file, diffusers folder), weight files, tokenizers.

The names below load on first use, so that `lorascripts.models.families.family_names()` stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BaseModel": ".families",
    "Family": ".families",
    "get_family": ".families",
    "load_base_model": ".loader",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
