"""fp8 base weights (`fp8_base`, kohya's name): the Linear weights of a diffusion transformer's blocks stored in
float8_e4m3fn and computed in the run's dtype, halving the frozen model's memory against bf16.

Hand-written (one autograd function), not a library, because none fitted training with our LoRA layers:
- diffusers' layerwise casting (`apply_layerwise_casting`) casts a layer's weight back to fp8 after its forward,
  but autograd saved that same parameter for the backward: the backward then multiplies by an fp8 tensor and
  fails ("Promotion for Float8 Types is not supported", reproduced with diffusers 0.42 on a tiny FLUX); it is
  made for inference;
- torchao's float8 weight-only configs and optimum-quanto's `qfloat8` replace the weight by a scaled tensor
  subclass, so an fp8 file's tensors would be requantised rather than kept, they are not dependencies of the
  engine, and quanto is no longer maintained.
Here the forward casts the fp8 weight to the compute dtype for one matmul and autograd keeps only the fp8
parameter: the backward casts it again (the input's gradient is all a frozen layer needs). The cast copy lives
for one matmul, so the fp8 saving holds in the backward too, with or without gradient checkpointing.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn; larger values would become NaN in the cast


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class _Float8Linear(torch.autograd.Function):
    """y = x W^T + b with W stored fp8: W is cast for the matmul only, autograd keeps the fp8 tensor."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        dtype = _compute_dtype(x)
        ctx.save_for_backward(weight)
        ctx.dtypes = (dtype, x.dtype)
        b = None if bias is None else bias.to(dtype)
        return nn.functional.linear(x.to(dtype), weight.to(dtype), b)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (weight,) = ctx.saved_tensors
        dtype, x_dtype = ctx.dtypes
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return (grad.to(dtype) @ weight.to(dtype)).to(x_dtype), None, None


def _fp8_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return _Float8Linear.apply(x, self.weight, self.bias)


def to_fp8(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor in float8_e4m3fn (values beyond its range clamped, not turned into NaN)."""
    if tensor.dtype == FP8:
        return tensor
    return tensor.clamp(-FP8_MAX, FP8_MAX).to(FP8)


def store_fp8(model: nn.Module, blocks: Iterable[nn.Module], compute_dtype: torch.dtype) -> int:
    """Store every Linear weight inside `blocks` in fp8 (computed in the input's dtype); every other fp8 tensor
    of `model` (an fp8 file's embedders, biases, norm scales) is upcast to `compute_dtype`. Returns the number of
    fp8 weights. LoRA layers attached later wrap the fp8 forward and keep their own dtype."""
    stored: set[int] = set()
    for block in blocks:
        for module in block.modules():
            if isinstance(module, nn.Linear) and not module.weight.requires_grad:
                module.weight.data = to_fp8(module.weight.data)
                module.forward = types.MethodType(_fp8_forward, module)
                stored.add(id(module.weight))
    upcast_fp8(model, compute_dtype, keep=stored)
    return len(stored)


def upcast_fp8(model: nn.Module, dtype: torch.dtype, keep: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """Every fp8 tensor of `model` (but those in `keep`, by id) in `dtype`."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dtype == FP8 and id(tensor) not in keep:
            tensor.data = tensor.data.to(dtype)


def fp8_bytes(model: nn.Module) -> int:
    """Bytes of the model's fp8 tensors."""
    return sum(t.numel() for t in model.parameters() if t.dtype == FP8)
