"""Model FLOPs and saved-activation bytes of one LoRA training step, counted once on the meta device.

Why by hand around torch's counter: `torch.utils.flop_counter` has no formula for the fused CPU attention
kernel (`_scaled_dot_product_flash_attention_for_cpu`), so counting a real CPU step misses all attention.
On the meta device nothing is computed and the whole SD1.5 U-Net forward and backward is counted in a few
seconds; attention goes through a stand-in with torch's own SDPA formulas that saves what the fused kernel
saves (meta's math fallback would also keep the attention matrix). The LoRA layers themselves are added analytically
(their shapes come from the same target selection the trainer uses), because attaching lycoris modules to a
meta model is not supported.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

if TYPE_CHECKING:
    from ..models.families import Family

logger = logging.getLogger(__name__)

DEFAULT_ROLES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "ff", "proj_in", "proj_out")


@dataclass
class StepCost:
    """What one training step costs, from one meta-device pass."""

    flops: float  # the whole step: text encoder(s), denoiser forward + backward, LoRA
    unet_forward_flops: float  # the denoiser's forward
    activation_bytes: int  # tensors the denoiser (and trained text encoders) keep for backward
    largest_activation_bytes: int  # the biggest single one (a transient of that size lives during backward)
    ops: int  # aten operator calls per step (CPU time per call dominates small models)
    lora_params: int
    attention_flops: float = 0.0  # the denoiser's fused attention, forward + backward (part of `flops`)


class _OpCounter(TorchDispatchMode):
    """Counts aten calls (the per-operator overhead part of the time model)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        self.calls += 1
        return func(*args, **(kwargs or {}))


class _SavedTensors:
    """Unique non-parameter storages autograd saves for backward (pack hook), measured on meta tensors."""

    def __init__(self, module: nn.Module) -> None:
        self._params = {p.untyped_storage()._cdata for p in module.parameters()}
        self.sizes: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in self._params:
            self.sizes[storage._cdata] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


class _FlashLikeAttention(torch.autograd.Function):
    """SDPA on meta tensors as the fused kernel behaves: torch's FLOP formulas, only q/k/v/out/lse saved.

    On meta, SDPA falls back to the math decomposition, which would save the N x M attention matrix and make
    the memory estimate of a 1024 px step ten times too big; the fused kernels recompute it in backward.
    """

    @staticmethod
    def forward(ctx, q, k, v, acc):  # noqa: ANN001, ANN205 - autograd.Function protocol
        from torch.utils.flop_counter import sdpa_flop_count

        acc["forward"] += sdpa_flop_count(q.shape, k.shape, v.shape)
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.acc = acc
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        from torch.utils.flop_counter import sdpa_backward_flop_count

        q, k, v, _, _ = ctx.saved_tensors
        ctx.acc["backward"] += sdpa_backward_flop_count(grad.shape, q.shape, k.shape, v.shape)
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), None


@contextlib.contextmanager
def _fused_attention(acc: dict[str, float]) -> Iterator[None]:
    """Route F.scaled_dot_product_attention through _FlashLikeAttention while counting (restored after)."""
    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - torch's signature
        return _FlashLikeAttention.apply(query, key, value, acc)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def count_flops(
    build: Callable[[], nn.Module],
    shapes: list[tuple[int, ...]],
    *,
    keyword_names: tuple[str, ...] = (),
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of a frozen module built by `build` on the meta device.

    The first shape is the positional input, the others are passed as `keyword_names`; every input requires
    grad, so the backward is the one a LoRA step runs through frozen layers (input gradients, no weight ones).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        module = build()
    nn.Module.to(module, dtype)
    module.requires_grad_(False)
    inputs = [torch.empty(s, device="meta", dtype=dtype, requires_grad=True) for s in shapes]
    attention = {"forward": 0.0, "backward": 0.0}
    with FlopCounterMode(display=False) as counter, _fused_attention(attention):
        out = module(inputs[0], **dict(zip(keyword_names, inputs[1:])))
        forward = float(counter.get_total_flops()) + attention["forward"]
        out.float().sum().backward()
    return forward, float(counter.get_total_flops()) + attention["forward"] + attention["backward"]


def _lora_flops(module: nn.Module, rows: int, rank: int) -> tuple[float, int]:
    """(forward FLOPs, parameters) of a rank-`rank` LoRA beside `module` applied to `rows` positions."""
    if isinstance(module, nn.Linear):
        inner = module.in_features + module.out_features
    else:  # Conv2d: down conv with the layer's kernel, up conv 1x1
        kh, kw = module.kernel_size
        inner = module.in_channels * kh * kw + module.out_channels
    return 2.0 * rows * rank * inner, rank * inner


def _hook_lora(targets: Iterable[nn.Module], rank: int, acc: dict[str, float]) -> list[Any]:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        rows = output.numel() // (
            module.out_features if isinstance(module, nn.Linear) else module.out_channels
        )
        flops, params = _lora_flops(module, rows, rank)
        acc["flops"] += flops
        acc["params"] += params

    return [m.register_forward_hook(hook) for m in targets]


def _lora_targets(
    family: Family, denoiser: nn.Module, roles: Iterable[str], with_conv: bool
) -> list[nn.Module]:
    """The layers training would give a LoRA, chosen by the family's own rule on the meta denoiser."""
    from ..models.families import BaseModel

    base = BaseModel(family, denoiser, None, [], [], None, "epsilon", "", "meta", 0)
    return [t.module for t in family.lora_targets(base, set(roles), with_conv=with_conv, text=False)]


def _meta_denoiser(
    family: Family, config: dict[str, Any], dtype: torch.dtype, checkpointing: bool
) -> nn.Module:
    denoiser = family.meta_denoiser(config)
    nn.Module.to(denoiser, dtype)  # not ModelMixin.to: its fp32-module warning is about real weights
    denoiser.requires_grad_(False)
    if checkpointing:
        denoiser.enable_gradient_checkpointing()
    return denoiser.train()


def _denoiser_pass(
    family: Family,
    config: dict[str, Any],
    batch: int,
    latent_hw: tuple[int, int],
    text_len: int,
    dtype: torch.dtype,
    checkpointing: bool,
    rank: int,
    roles: Iterable[str],
    conv: bool,
) -> tuple[float, float, _SavedTensors, int, dict[str, float]]:
    from torch.utils.flop_counter import FlopCounterMode

    denoiser = _meta_denoiser(family, config, dtype, checkpointing)
    lora = {"flops": 0.0, "params": 0}
    handles = _hook_lora(_lora_targets(family, denoiser, roles, conv), rank, lora)
    args, kwargs = family.meta_denoiser_inputs(config, batch, latent_hw, text_len, dtype)
    saved = _SavedTensors(denoiser)
    ops = _OpCounter()
    attention = {"forward": 0.0, "backward": 0.0}
    try:
        with FlopCounterMode(display=False) as counter, ops, _fused_attention(attention):
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                out = denoiser(*args, **kwargs).sample
            forward = float(counter.get_total_flops()) + attention["forward"]
            lora = dict(lora)  # checkpointing re-runs the forward in backward: count the LoRA layers once
            out.float().square().mean().backward()
            total = float(counter.get_total_flops()) + attention["forward"] + attention["backward"]
    finally:
        for handle in handles:
            handle.remove()
    lora["attention"] = attention["forward"] + attention["backward"]
    return forward, total, saved, ops.calls, lora


def _text_pass(
    family: Family, config: dict[str, Any], batch: int, text_len: int, dtype: torch.dtype
) -> tuple[float, int]:
    """(forward FLOPs, aten calls) of one text encoder on a batch of prompts."""
    from torch.utils.flop_counter import FlopCounterMode

    model, ids = family.meta_text_encoder(config, batch, text_len)
    model.to(dtype)
    ops = _OpCounter()
    attention = {"forward": 0.0, "backward": 0.0}
    with torch.no_grad(), FlopCounterMode(display=False) as counter, ops, _fused_attention(attention):
        model(ids)
    return float(counter.get_total_flops()) + attention["forward"], ops.calls


def train_step_cost(
    family: Family,
    denoiser_config: dict[str, Any],
    *,
    batch: int,
    height: int,
    width: int,
    text_len: int = 77,
    text_encoder_configs: list[dict[str, Any]] | None = None,
    train_text_encoder: bool = False,
    gradient_checkpointing: bool = False,
    run_text_encoder: bool = True,
    rank: int = 16,
    roles: Iterable[str] = DEFAULT_ROLES,
    conv_lora: bool = False,
    vae_scale: int = 8,
    dtype: torch.dtype = torch.bfloat16,
) -> StepCost:
    """FLOPs, saved activations and operator calls of one LoRA step on images of height x width pixels."""
    latent_hw = (height // vae_scale, width // vae_scale)
    fwd, total, saved, ops, lora = _denoiser_pass(
        family,
        denoiser_config,
        batch,
        latent_hw,
        text_len,
        dtype,
        gradient_checkpointing,
        rank,
        roles,
        conv_lora,
    )
    # LoRA: forward, input gradient and weight gradient, each the size of the forward
    flops = total + (4.0 if gradient_checkpointing else 3.0) * lora["flops"]
    lora_params = int(lora["params"])
    if run_text_encoder or train_text_encoder:
        for config in text_encoder_configs or []:
            te_flops, te_ops = _text_pass(family, config, batch, text_len, dtype)
            # trained: + backward to the inputs of the frozen layers (one forward's worth) + LoRA (small)
            flops += te_flops * (2.0 if train_text_encoder else 1.0)
            ops += te_ops * (3 if train_text_encoder else 1)
    largest = max(saved.sizes.values(), default=0)
    return StepCost(flops, fwd, saved.total, largest, ops, lora_params, lora["attention"])


def train_step_flops(family: Family, denoiser_config: dict[str, Any], **kwargs: Any) -> float:
    """Model FLOPs of one LoRA training step (the benchmark's MFU numerator); keywords as train_step_cost:
    batch, height, width (pixels), text_len, text_encoder_configs, train_text_encoder, gradient_checkpointing."""
    return train_step_cost(family, denoiser_config, **kwargs).flops
