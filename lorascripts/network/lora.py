"""The trainable network: LyCORIS layer modules attached to a base model, under kohya key names.

The layer maths (LoRA/LoCon, LoHa, LoKr; dropout, rank dropout, module dropout) is lycoris-lora's; this file
owns only what no library does for us: which layers (targets.py), their kohya names (naming.py), and the
kohya state dict in and out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from lycoris.modules.loha import LohaModule
from lycoris.modules.lokr import LokrModule
from torch import nn

from ..errors import ModelError
from .cpu_lora import CpuFoldedLoConModule
from .targets import Target, expand_roles

logger = logging.getLogger(__name__)

ALGORITHMS: dict[str, type[nn.Module]] = {
    "lora": CpuFoldedLoConModule,
    "locon": CpuFoldedLoConModule,
    "loha": LohaModule,
    "lokr": LokrModule,
}
NETWORK_MODULE_NAMES = {
    "lora": "networks.lora",
    "locon": "networks.lora",
    "loha": "lycoris.kohya",
    "lokr": "lycoris.kohya",
}


@dataclass
class NetworkSpec:
    """Shape of the network to build; filled from TrainConfig (or from a LoRA file for incremental training)."""

    network_type: str = "lora"
    rank: int = 16
    alpha: float = 16.0
    conv_rank: int | None = None
    conv_alpha: float | None = None
    dropout: float = 0.0
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["all"])
    train_text_encoder: bool = True

    @property
    def uses_conv(self) -> bool:
        return self.network_type == "locon" or (
            self.network_type in ("loha", "lokr") and self.conv_rank is not None
        )

    @property
    def effective_conv_rank(self) -> int:
        return self.conv_rank if self.conv_rank is not None else self.rank

    @property
    def effective_conv_alpha(self) -> float:
        return self.conv_alpha if self.conv_alpha is not None else 1.0  # kohya's default for conv_alpha

    def network_args(self) -> dict[str, str]:
        """kohya `ss_network_args` (only what differs from plain LoRA)."""
        args: dict[str, str] = {}
        if self.uses_conv:
            args.update(conv_dim=str(self.effective_conv_rank), conv_alpha=str(self.effective_conv_alpha))
        if self.network_type in ("loha", "lokr"):
            args["algo"] = self.network_type
        if self.rank_dropout:
            args["rank_dropout"] = str(self.rank_dropout)
        if self.module_dropout:
            args["module_dropout"] = str(self.module_dropout)
        return args


def collect_targets(base: object, spec: NetworkSpec) -> list[Target]:
    """All layers that get a LoRA for this base model and spec (denoiser first, then text encoders)."""
    family = base.family  # type: ignore[attr-defined]
    roles = expand_roles(spec.target_modules)
    targets = family.lora_targets(base, roles, with_conv=spec.uses_conv, text=spec.train_text_encoder)
    if not targets:
        raise ModelError(
            f"target_modules {spec.target_modules} selects no layer of this {family.label} model. "
            "Use the default set or names such as q_proj, v_proj, ff."
        )
    return targets


class LoraNetwork(nn.Module):
    """A set of LyCORIS modules keyed by kohya name, hooked into the base model's layers."""

    def __init__(self, spec: NetworkSpec, family: str) -> None:
        super().__init__()
        self.spec = spec
        self.family = family
        self.lora_modules = nn.ModuleDict()
        self.components: dict[str, str] = {}
        self._applied = False

    @classmethod
    def create(
        cls, base: object, spec: NetworkSpec, *, initial: Mapping[str, torch.Tensor] | None = None
    ) -> LoraNetwork:
        """Build the network for `base`; `initial` (a kohya state dict) seeds weights and per-module ranks."""
        family = base.family  # type: ignore[attr-defined]
        net = cls(spec, family.name)
        namer = family.kohya_name(base)
        seeds = _group(initial) if initial is not None else {}
        for target in collect_targets(base, spec):
            name = namer(target.component, target.path)
            if name in net.lora_modules:
                raise ModelError(
                    f"Two layers map to the same kohya name {name}; this model layout is not supported."
                )
            module = net._make_module(name, target, seeds.get(name))
            net.lora_modules[name] = module
            net.components[name] = target.component
        if initial is not None:
            unknown = sorted(set(seeds) - set(net.lora_modules))
            if seeds and len(unknown) == len(seeds):
                raise ModelError(
                    f"the LoRA's {len(seeds)} modules match no layer of this {family.name.upper()} model (e.g. {unknown[0]}): "
                    "it was made for another base model. Use a LoRA trained on this model's family."
                )
            if unknown:
                logger.warning(
                    "initial LoRA: %d modules match no layer of this model and are ignored: %s",
                    len(unknown),
                    ", ".join(unknown[:5]),
                )
        logger.info(
            "LoRA network: %d modules (%s, rank %d, alpha %g)",
            len(net.lora_modules),
            spec.network_type,
            spec.rank,
            spec.alpha,
        )
        return net

    def _make_module(self, name: str, target: Target, seed: dict[str, torch.Tensor] | None) -> nn.Module:
        spec = self.spec
        rank, alpha = (
            (spec.effective_conv_rank, spec.effective_conv_alpha)
            if target.is_conv3x3
            else (spec.rank, spec.alpha)
        )
        if seed is not None:
            rank, alpha = _rank_alpha_from(seed, rank, alpha)
        algo = ALGORITHMS[spec.network_type]
        module = algo(
            name,
            target.module,
            multiplier=1.0,
            lora_dim=rank,
            alpha=alpha,
            dropout=spec.dropout,
            rank_dropout=spec.rank_dropout,
            module_dropout=spec.module_dropout,
            bypass_mode=True,
        )
        if seed is not None:
            try:
                module.load_state_dict(seed, strict=False)
            except RuntimeError as exc:
                raise ModelError(f"initial LoRA: module {name} does not fit this model ({exc}).") from None
        return module

    # --- hooking -----------------------------------------------------------------------------------------------
    def apply(self) -> None:
        """Route the base layers' forward through the LoRA modules (idempotent)."""
        if not self._applied:
            for module in self.lora_modules.values():
                module.apply_to()
            self._applied = True

    def remove(self) -> None:
        """Restore the base layers' original forward."""
        if self._applied:
            for module in self.lora_modules.values():
                module.restore()
            self._applied = False

    def set_multiplier(self, unet: float, text: float | None = None) -> None:
        """LoRA strength (as `<lora:name:te:unet>` does), 0 reproduces the base model exactly."""
        text = unet if text is None else text
        for name, module in self.lora_modules.items():
            module.multiplier = unet if self.components[name] == "unet" else text

    # --- parameters and weights ------------------------------------------------------------------------------------
    def param_groups(self, unet_lr: float, text_lr: float) -> list[dict]:
        """Optimizer parameter groups: U-Net and text-encoder modules at their own learning rates."""
        unet = [
            p for n, m in self.lora_modules.items() if self.components[n] == "unet" for p in m.parameters()
        ]
        text = [
            p for n, m in self.lora_modules.items() if self.components[n] != "unet" for p in m.parameters()
        ]
        groups = [{"params": unet, "lr": unet_lr, "name": "unet"}]
        if text:
            groups.append({"params": text, "lr": text_lr, "name": "text_encoder"})
        return groups

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """`<kohya name>.<part>` -> tensor, detached on CPU (alpha as a 0-dim tensor)."""
        out: dict[str, torch.Tensor] = {}
        for name, module in self.lora_modules.items():
            for part, tensor in module.custom_state_dict().items():
                t = tensor.detach().to("cpu")
                out[f"{name}.{part}"] = t.to(dtype) if dtype is not None else t.clone()
        return out

    def load_kohya_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load weights saved by `kohya_state_dict` (same layout); used when resuming."""
        groups = _group(state)
        missing = sorted(set(self.lora_modules) - set(groups))
        if missing:
            raise ModelError(
                f"checkpoint lacks {len(missing)} LoRA modules (e.g. {missing[0]}); it belongs to another run."
            )
        for name, parts in groups.items():
            if name in self.lora_modules:
                self.lora_modules[name].load_state_dict(parts, strict=False)

    def all_finite(self) -> bool:
        """True when no LoRA weight is NaN/inf (checked before every save)."""
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())


def _group(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        base, _, part = key.partition(".")
        groups.setdefault(base, {})[part] = tensor
    return groups


def _rank_alpha_from(parts: Mapping[str, torch.Tensor], rank: int, alpha: float) -> tuple[int, float]:
    """Rank and alpha of a saved module (rank from lora_down / hada_w1_b rows, like every loader)."""
    for key in ("lora_down.weight", "hada_w1_b", "lokr_w2_a"):
        if key in parts:
            rank = int(parts[key].shape[0] if key != "lokr_w2_a" else parts[key].shape[1])
            break
    if "alpha" in parts:
        alpha = float(parts["alpha"].float().item())
    return rank, alpha
