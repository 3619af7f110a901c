"""lycoris' LoRA layer with its scale folded into the small up weight on the CPU.

lycoris' eager path (the one it takes for CPU tensors; on CUDA it dispatches to its fused kernels) computes
`base + up(down(x)) * gamma * scalar`: two multiplies over the whole activation in the forward and two more in
the backward, per adapted layer. On the tiny FLUX benchmark they were ~13% of a training step. Folding
`gamma * scalar` into the up weight (rank x out values) and adding the product onto the base output in one
`addmm` gives the same sum with one rounding fewer, and leaves only the two matmuls that carry the work. The
maths, parameters, state dict and every other path (conv, Tucker, DoRA, dropout, rank dropout, CUDA) stay
lycoris'; this class only routes the plain linear case. Not a lycoris option, hence the small subclass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lycoris.modules.locon import LoConModule
from torch import nn


class CpuFoldedLoConModule(LoConModule):
    """`LoConModule` whose plain linear LoRA on CPU tensors runs as down-matmul + one addmm."""

    def _folds(self, x: torch.Tensor) -> bool:
        plain = not (self.isconv or self.tucker or self.wd) and isinstance(self.dropout, nn.Identity)
        return plain and x.device.type == "cpu" and x.dim() >= 2 and not (self.rank_dropout and self.training)

    def bypass_forward(self, x: torch.Tensor, scale: float = 1) -> torch.Tensor:
        if not self._folds(x):
            return super().bypass_forward(x, scale=scale)
        base = self.org_forward(x)
        if base.dtype != x.dtype and not torch.is_autocast_enabled("cpu"):
            return base + super().bypass_forward_diff(x, scale=scale)  # the library's dtype promotion
        up = self.lora_up.weight.to(x) * (self.scalar.to(x) * (self.scale * scale))
        mid = F.linear(x, self.lora_down.weight.to(x))
        out = torch.addmm(base.reshape(-1, base.shape[-1]), mid.reshape(-1, mid.shape[-1]), up.t())
        return out.view(base.shape)
