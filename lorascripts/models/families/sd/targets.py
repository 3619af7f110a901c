"""Which layers of the U-Net and CLIP text encoders get a LoRA (kohya's default module set, LORA_FORMAT.md §2.1)."""

from __future__ import annotations

import logging

from torch import nn

from ....network.targets import ATTENTION_ROLES, Target, layers_inside, leaf_role

logger = logging.getLogger(__name__)

UNET_TRANSFORMER_CLASSES = ("Transformer2DModel",)
UNET_CONV_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


def unet_targets(unet: nn.Module, roles: set[str], *, with_conv: bool) -> list[Target]:
    """Transformer layers of the U-Net selected by role, plus resnet/sampler convs for LoCon-style networks."""
    targets = []
    for path, module in layers_inside(unet, UNET_TRANSFORMER_CLASSES):
        role = leaf_role(path)
        if role in roles:
            targets.append(Target("unet", path, module, role, False))
    if with_conv:
        for path, module in layers_inside(unet, UNET_CONV_CLASSES):
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
    for path, module in layers_inside(encoder, TEXT_CLASSES):
        role = leaf_role(path)
        if role in selected and isinstance(module, nn.Linear):
            targets.append(Target(component, path, module, role, False))
    return targets
