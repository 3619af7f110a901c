"""What every family's LoRA target selection shares: the `Target` record, roles, and finding layers by class.

Selection is by container class name, like kohya, so any model of a family works whatever its size; each family
names its containers (`models/families/*/targets.py`). `target_modules` narrows the set by leaf role.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from ..config.rules import TARGET_ALIASES

logger = logging.getLogger(__name__)

ATTENTION_ROLES = ("q_proj", "k_proj", "v_proj", "out_proj")
ALL_ROLES = (*ATTENTION_ROLES, "fc1", "fc2", "ff", "proj_in", "proj_out")


@dataclass(frozen=True)
class Target:
    """One layer that gets a LoRA: where it is, what it is, and which rank class it uses."""

    component: str  # "unet", "te", "te1" or "te2"
    path: str  # module path inside that component
    module: nn.Module
    role: str  # q_proj, ..., ff, proj_in, proj_out, conv
    is_conv3x3: bool


def expand_roles(names: Iterable[str]) -> set[str]:
    """target_modules spellings -> the set of leaf roles they select."""
    roles: set[str] = set()
    for name in names:
        role = TARGET_ALIASES.get(name, name)
        if role == "all":
            roles.update(ALL_ROLES)
        elif role == "attn":
            roles.update(ATTENTION_ROLES)
        elif role == "mlp":
            roles.update(("fc1", "fc2", "ff"))
        else:
            roles.add(role)
    return roles


def leaf_role(path: str) -> str | None:
    """The role of a leaf Linear/Conv inside an attention/MLP/transformer container, from its path."""
    parts = path.split(".")
    last = parts[-1]
    if last in ("q_proj", "to_q"):
        return "q_proj"
    if last in ("k_proj", "to_k"):
        return "k_proj"
    if last in ("v_proj", "to_v"):
        return "v_proj"
    if last == "out_proj" or (len(parts) >= 2 and parts[-2] == "to_out"):
        return "out_proj"
    if last in ("fc1", "fc2", "proj_in", "proj_out"):
        return last
    if "ff" in parts:
        return "ff"
    return None


def is_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d))


def layers_inside(root: nn.Module, classes: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """Linear/Conv2d leaves inside any module whose class name is in `classes` (deduplicated, in order)."""
    found: dict[str, nn.Module] = {}
    for name, container in root.named_modules():
        if type(container).__name__ not in classes:
            continue
        for child_name, child in container.named_modules():
            if child_name and is_layer(child):
                found.setdefault(f"{name}.{child_name}" if name else child_name, child)
    return list(found.items())
