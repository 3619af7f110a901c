"""One training step's maths, through the family: noisy input and target from its objective, the denoiser's
prediction, and the (weighted) loss.

`DiffusionLoRAModule` wraps the frozen base model and the trainable network in one nn.Module whose forward
returns the loss, so `accelerate` (DDP, mixed precision, gradient accumulation) can wrap it as it wraps any
model; the frozen weights are not synchronised, only the LoRA parameters have gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ..models.families import Objective


class DiffusionLoRAModule(nn.Module):
    """Frozen denoiser + text encoders + trainable LoRA network; forward(batch) -> scalar loss.

    `text_encoders`: the encoders to register (default: all); the run leaves out those released to the CPU
    (train/placement.py), so that `accelerate`'s prepare() and DDP do not bring them back to the device. Frozen
    text encoders (all of them, or those without a LoRA layer when the text encoder trains) stay in eval mode
    when the module trains (T5's dropout would reach the caption outputs).
    """

    def __init__(
        self,
        base: Any,
        network: nn.Module,
        objective: Objective,
        *,
        clip_skip: int,
        text_encoders: Sequence[nn.Module] | None = None,
        train_text_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.denoiser = base.denoiser
        self.text_encoders = nn.ModuleList(base.text_encoders if text_encoders is None else text_encoders)
        self.network = network
        self._base = [base]  # not a submodule: its parts on the device are registered above
        self.family = base.family
        self.clip_skip = clip_skip
        self.objective = objective
        adapted = {id(m.org_module[0]) for m in getattr(network, "lora_modules", {}).values()}
        # encoders with no LoRA layer (FLUX's T5 while CLIP-L trains) stay frozen, in eval mode, as kohya keeps them
        self._frozen_encoders = [
            e
            for e in self.text_encoders
            if not train_text_encoder or not any(id(m) in adapted for m in e.modules())
        ]

    def train(self, mode: bool = True) -> DiffusionLoRAModule:
        super().train(mode)
        for encoder in self._frozen_encoders:
            encoder.eval()
        return self

    def condition(
        self, input_ids: list[torch.Tensor] | None, cached: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """Text conditioning: cached outputs, or the (possibly LoRA-trained) text encoders run now."""
        if cached is not None:
            return cached
        return self.family.encode_tokens(self._base[0], input_ids, clip_skip=self.clip_skip)

    def forward(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        input_ids: list[torch.Tensor] | None = None,
        cached: dict[str, torch.Tensor] | None = None,
        image: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        conditioning = {**self.condition(input_ids, cached), **(image or {})}
        noisy, target = self.objective.noisy_input(latents, noise, timesteps)
        model_t = self.objective.model_timesteps(timesteps)
        pred = self.family.predict(self._base[0], noisy, model_t, conditioning)
        loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
        loss = loss.mean(dim=tuple(range(1, loss.dim())))
        weights = self.objective.loss_weights(timesteps)
        if weights is not None:
            loss = loss * weights.to(loss.device)
        return loss.mean()
