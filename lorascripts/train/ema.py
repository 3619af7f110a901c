"""Exponential moving average of the LoRA weights, kept in fp32 on the training device or the CPU.

Hand-written rather than diffusers' EMAModel: that one pickles its state through torch.save in the examples
and keeps a copy per parameter of the whole model, while here only the small LoRA tensors are averaged and the
state has to travel in our safetensors checkpoints (exact resume) under plain names.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "__ema__."  # EMA tensors ride in the checkpoint's network file under this prefix


class LoraEMA:
    """fp32 shadow copies of the trainable tensors: `update(step)` after each optimizer step, `applied()` to
    use them (saves, samples, validation) and put the trained weights back afterwards."""

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        decay: float,
        start_step: int,
        update_every: int,
        device: torch.device,
    ) -> None:
        self.params = params
        self.decay = decay
        self.start_step = start_step
        self.update_every = update_every
        self.shadow = [p.detach().to(device, torch.float32, copy=True) for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Follow the weights exactly until start_step, then average every update_every steps."""
        if step <= self.start_step:
            for s, p in zip(self.shadow, self.params):
                s.copy_(p.detach())
            return
        if step % self.update_every:
            return
        weight = 1.0 - self.decay
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach().to(s.device, torch.float32), weight)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The EMA weights in the network for the duration of the block; the trained ones afterwards."""
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            for s, p in zip(self.shadow, self.params):
                p.copy_(s.to(p.device, p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for kept, p in zip(saved, self.params):
                    p.copy_(kept)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow tensors under checkpoint names."""
        return {f"{CHECKPOINT_PREFIX}{i}": s.detach().cpu().contiguous() for i, s in enumerate(self.shadow)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> bool:
        """Restore from checkpoint tensors; False (and the current weights kept) when they have none or other
        shapes, e.g. a checkpoint written before EMA was switched on."""
        found = [tensors.get(f"{CHECKPOINT_PREFIX}{i}") for i in range(len(self.shadow))]
        if any(t is None or t.shape != s.shape for t, s in zip(found, self.shadow)):
            return False
        with torch.no_grad():
            for s, t in zip(self.shadow, found):
                s.copy_(t)
        return True

    def nbytes(self) -> int:
        return sum(s.numel() * 4 for s in self.shadow)


def split_ema_tensors(
    tensors: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(network tensors, EMA tensors) of a checkpoint's network file."""
    ema = {k: v for k, v in tensors.items() if k.startswith(CHECKPOINT_PREFIX)}
    return {k: v for k, v in tensors.items() if k not in ema}, ema
