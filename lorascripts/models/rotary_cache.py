"""Reuse a transformer's rotary position table while the position ids stay the same.

diffusers' FLUX.1 transformer rebuilds its rotary table (`pos_embed(ids)`: cos and sin of every position, in
float64 on the CPU) in every forward, although a training run's ids only change with the bucket's size. On the
tiny FLUX benchmark that rebuild was ~4% of a training step. `RotaryCache` wraps the position embedder and
returns the last table while the ids are equal (compared by value: a few thousand integers per call); the
table holds no gradient and no parameters, so nothing else (state dict, saving, samples) changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RotaryCache(nn.Module):
    """A position embedder whose output for the last ids is kept."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self._ids: torch.Tensor | None = None
        self._table: Any = None

    def forward(self, ids: torch.Tensor) -> Any:
        last = self._ids
        if (
            last is None
            or last.shape != ids.shape
            or last.dtype != ids.dtype
            or last.device != ids.device
            or not torch.equal(last, ids)
        ):
            with torch.no_grad():
                self._table = self.inner(ids)
            self._ids = ids.detach().clone()
        return self._table


def cache_rotary(model: nn.Module, attribute: str = "pos_embed") -> None:
    """Wrap `model.<attribute>` in a `RotaryCache` (once)."""
    inner = getattr(model, attribute)
    if not isinstance(inner, RotaryCache):
        setattr(model, attribute, RotaryCache(inner))
