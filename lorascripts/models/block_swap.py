"""Block swap (`blocks_to_swap`, kohya's and musubi-tuner's name): N of a diffusion transformer's blocks stay in
CPU memory and each comes to the training device just before it computes (forward, the gradient-checkpoint
recomputation and the backward), and leaves again after.

Which blocks: the family names its block lists and how many blocks of each make one unit (`Family.swap_blocks`:
FLUX.1's double blocks count 1, its single blocks, about half their size, 2); N units are shared evenly over the
lists (the last list takes the odd one) and the last blocks of each list are swapped. For FLUX.1 this is kohya's
rule: 16 = 8 double + 16 single blocks.

Hand-written, not diffusers' group offloading or accelerate's offload hooks: those move weights in forward hooks,
made for inference. Training needs a block's weights again in its backward (and, with gradient checkpointing, in
its recomputation), which no forward hook sees; SimpleTuner turns diffusers' streamed group offload off under
checkpointing for this reason (bghira/SimpleTuner#1984). Here two identity autograd functions mark a block's
output and its inputs: the output's backward brings the block back before autograd needs it, the inputs'
backward (all the block's gradients done) sends it away; whatever is still on the device when the backward ends
leaves then.

A move is an assignment of `param.data`: the Parameter objects stay the same (autograd saved them, optimizers
and LoRA layers hold them), only their storage changes. The frozen weights never change, so leaving is free: the
parameter points at its CPU copy again (pinned on CUDA, so that coming back is an asynchronous copy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

logger = logging.getLogger(__name__)


def _shares(units: int, lists: int) -> list[int]:
    even = units // lists
    return [even] * (lists - 1) + [units - even * (lists - 1)]


def _chosen_counts(family: Any, denoiser: nn.Module, units: int) -> list[int] | None:
    """Blocks swapped from each list for `units`, or None when a list has too few."""
    counts = []
    for (name, per_unit), share in zip(family.swap_blocks, _shares(units, len(family.swap_blocks))):
        count = share * per_unit
        if count > len(getattr(denoiser, name)):
            return None
        counts.append(count)
    return counts


def swapped_blocks(family: Any, denoiser: nn.Module, units: int) -> list[nn.Module]:
    """The blocks `blocks_to_swap: units` keeps off the device, in the order they run; ConfigError when the family
    has no swappable blocks or fewer than asked."""
    if not family.swap_blocks:
        raise ConfigError(
            f"blocks_to_swap: {family.label} has no transformer blocks to swap (it is for diffusion transformers "
            "such as FLUX.1); set blocks_to_swap: 0."
        )
    counts = _chosen_counts(family, denoiser, units)
    if counts is None:
        most = max(n for n in range(units) if _chosen_counts(family, denoiser, n) is not None)
        raise ConfigError(
            f"blocks_to_swap: {units} is more than this {family.label} model has; at most {most}."
        )
    blocks: list[nn.Module] = []
    for (name, _), count in zip(family.swap_blocks, counts):
        listed = list(getattr(denoiser, name))
        blocks += listed[len(listed) - count :] if count else []
    return blocks


def family_blocks(family: Any, denoiser: nn.Module) -> list[nn.Module]:
    """Every block of the family's block lists (fp8 storage applies inside them)."""
    return [block for name, _ in family.swap_blocks for block in getattr(denoiser, name)]


class _Marker(torch.autograd.Function):
    """Identity on tensors whose backward calls `callback` (when the gradients of all of them are known)."""

    @staticmethod
    def forward(ctx: Any, callback: Callable[[], None], *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.callback = callback
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        ctx.callback()
        return (None, *grads)


def _mark(callback: Callable[[], None], values: list[Any]) -> list[Any]:
    """`values` with their tensors that require grad passed through one `_Marker` (unchanged when none does)."""
    where = [i for i, v in enumerate(values) if isinstance(v, torch.Tensor) and v.requires_grad]
    if not where:
        return values
    marked = _Marker.apply(callback, *(values[i] for i in where))
    out = list(values)
    for i, tensor in zip(where, marked):
        out[i] = tensor
    return out


class BlockSwapper:
    """Keeps `blocks` on `storage` and brings each to `device` while it computes; counts the moves."""

    def __init__(
        self, blocks: list[nn.Module], device: torch.device, storage: torch.device | None = None
    ) -> None:
        self.device = torch.device(device)
        self.storage = torch.device(storage or "cpu")
        self.blocks = blocks
        self.onloads = 0
        self.offloads = 0
        self._copies: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self._resident: set[int] = set()
        self._backward: set[int] = set()
        self._settle_queued = False
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        for index, block in enumerate(blocks):
            entries = []
            for tensor in (*block.parameters(), *block.buffers()):
                if tensor.requires_grad:
                    continue  # a trainable tensor (none today: LoRA layers are not children of the block)
                copy = tensor.data.to(self.storage)
                entries.append((tensor, copy.pin_memory() if pin else copy))
            self._copies.append(entries)
            self._resident.add(index)
            self.offload(index)
            block.forward = self._wrapped(index, block.forward)

    # --- moves ---------------------------------------------------------------------------------------------------
    def away(self, copy: torch.Tensor) -> torch.Tensor:
        """What a parameter holds while its block is away: its storage copy."""
        return copy

    def onload(self, index: int) -> None:
        if index in self._resident:
            return
        for tensor, copy in self._copies[index]:
            tensor.data = copy.to(self.device, non_blocking=True)
        self._resident.add(index)
        self.onloads += 1

    def offload(self, index: int) -> None:
        if index not in self._resident:
            return
        for tensor, copy in self._copies[index]:
            tensor.data = self.away(copy)
        self._resident.discard(index)
        self.offloads += 1

    def place(self, model: nn.Module) -> None:
        """Move the rest of `model` (everything but the swapped blocks) to the device."""
        swapped = {id(t) for entries in self._copies for t, _ in entries}
        for tensor in (*model.parameters(), *model.buffers()):
            if id(tensor) not in swapped:
                tensor.data = tensor.data.to(self.device)

    def swapped_bytes(self) -> int:
        return sum(c.numel() * c.element_size() for entries in self._copies for _, c in entries)

    # --- the schedule --------------------------------------------------------------------------------------------
    def _wrapped(self, index: int, inner: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            self.onload(index)
            if index in self._backward:  # the checkpoint recomputation inside this block's backward
                return inner(*args, **kwargs)
            training = torch.is_grad_enabled()
            if training:
                names = list(kwargs)
                marked = _mark(lambda: self._leave(index), [*args, *kwargs.values()])
                args, kwargs = tuple(marked[: len(args)]), dict(zip(names, marked[len(args) :]))
            out = inner(*args, **kwargs)
            self.offload(index)
            if not training:
                return out
            single = isinstance(out, torch.Tensor)
            marked = _mark(lambda: self._arrive(index), [out] if single else list(out))
            return marked[0] if single else type(out)(marked)

        return forward

    def _arrive(self, index: int) -> None:
        """Backward reached the block's output: bring it back before its gradients are computed."""
        self.onload(index)
        self._backward.add(index)
        if not self._settle_queued:
            # torch's hook for "when this backward ends" (FSDP and DeepSpeed use it): blocks whose inputs needed
            # no gradient never see their inputs' marker and leave here
            torch.autograd.Variable._execution_engine.queue_callback(self._settle)
            self._settle_queued = True

    def _leave(self, index: int) -> None:
        self._backward.discard(index)
        self.offload(index)

    def _settle(self) -> None:
        for index in list(self._resident):
            self.offload(index)
        self._backward.clear()
        self._settle_queued = False

    def remove(self) -> None:
        """Every block back on the device with its own forward (the swapper is no longer used)."""
        for index, block in enumerate(self.blocks):
            self.onload(index)
            block.__dict__.pop("forward", None)
