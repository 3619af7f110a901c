"""Which layers of the U-Net and text encoders get a LoRA (kohya's default module set, LORA_FORMAT.md §2.1).

Selection is by container class name, like kohya, so any diffusers U-Net / transformers CLIP model works,
whatever its size. `target_modules` narrows the set by leaf role (q_proj, v_proj, ff, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from ..config.rules import TARGET_ALIASES

logger = logging.getLogger(__name__)

UNET_TRANSFORMER_CLASSES = ("Transformer2DModel",)
UNET_CONV_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
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


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d))


def _inside(root: nn.Module, classes: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    """Linear/Conv2d leaves inside any module whose class name is in `classes` (deduplicated, in order)."""
    found: dict[str, nn.Module] = {}
    for name, container in root.named_modules():
        if type(container).__name__ not in classes:
            continue
        for child_name, child in container.named_modules():
            if child_name and _is_layer(child):
                found.setdefault(f"{name}.{child_name}" if name else child_name, child)
    return list(found.items())


def unet_targets(unet: nn.Module, roles: set[str], *, with_conv: bool) -> list[Target]:
    """Transformer layers of the U-Net selected by role, plus resnet/sampler convs for LoCon-style networks."""
    targets = []
    for path, module in _inside(unet, UNET_TRANSFORMER_CLASSES):
        role = leaf_role(path)
        if role in roles:
            targets.append(Target("unet", path, module, role, False))
    if with_conv:
        for path, module in _inside(unet, UNET_CONV_CLASSES):
            is3x3 = isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)
            targets.append(Target("unet", path, module, "conv", is3x3))
    return targets


def text_targets(
    encoder: nn.Module, component: str, roles: set[str], *, needs_full_attention: bool
) -> list[Target]:
    """Attention/MLP projections of a CLIP text encoder.

    `needs_full_attention`: the WebUI applies q/k/v/out of OpenCLIP encoders (SD2, SDXL te2) only as a set
    (LORA_FORMAT.md §9.5); a partial set would be a silent no-op there, so the set is completed.
    """
    selected = set(roles)
    if needs_full_attention and selected & set(ATTENTION_ROLES) and not set(ATTENTION_ROLES) <= selected:
        logger.warning(
            "%s: training q, k, v and out_proj together (you selected %s) because AUTOMATIC1111 ignores partial "
            "attention sets on this text encoder.",
            component,
            sorted(selected & set(ATTENTION_ROLES)),
        )
        selected |= set(ATTENTION_ROLES)
    targets = []
    for path, module in _inside(encoder, TEXT_CLASSES):
        role = leaf_role(path)
        if role in selected and isinstance(module, nn.Linear):
            targets.append(Target(component, path, module, role, False))
    return targets
