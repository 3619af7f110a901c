"""One training step's maths: noise, timesteps, the U-Net prediction and the (min-SNR weighted) loss.

`DiffusionLoRAModule` wraps the frozen base model and the trainable network in one nn.Module whose forward
returns the loss, so `accelerate` (DDP, mixed precision, gradient accumulation) can wrap it as it wraps any
model; the frozen weights are not synchronised, only the LoRA parameters have gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models.text import encode_tokens


@dataclass
class StepNoise:
    """Random draws of one step, made on the CPU from a per-step seed so that resume reproduces them."""

    noise: torch.Tensor
    timesteps: torch.Tensor

    @classmethod
    def draw(cls, shape: tuple[int, ...], num_timesteps: int, seed: int, noise_offset: float) -> StepNoise:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(shape, generator=generator)
        if noise_offset:
            noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator)
        timesteps = torch.randint(0, num_timesteps, (shape[0],), generator=generator)
        return cls(noise, timesteps)


def min_snr_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, v_pred: bool
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), for epsilon or v targets."""
    alpha = alphas_cumprod[timesteps]
    snr = alpha / (1.0 - alpha)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1.0) if v_pred else clipped / snr


class DiffusionLoRAModule(nn.Module):
    """Frozen U-Net + text encoders + trainable LoRA network; forward(batch) -> scalar loss."""

    def __init__(
        self, base: object, network: nn.Module, *, clip_skip: int, min_snr_gamma: float | None
    ) -> None:
        super().__init__()
        self.unet = base.unet  # type: ignore[attr-defined]
        self.text_encoders = nn.ModuleList(base.text_encoders)  # type: ignore[attr-defined]
        self.network = network
        self._base = [base]  # not a submodule: its parts are registered above
        self.clip_skip = clip_skip
        self.min_snr_gamma = min_snr_gamma
        scheduler = base.noise_scheduler  # type: ignore[attr-defined]
        self.scheduler = scheduler
        self.v_pred = base.prediction_type == "v_prediction"  # type: ignore[attr-defined]
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.clone().float(), persistent=False)
        self.is_sdxl = len(base.text_encoders) == 2  # type: ignore[attr-defined]

    def condition(
        self, input_ids: list[torch.Tensor] | None, cached: tuple[torch.Tensor, torch.Tensor | None] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text conditioning: cached outputs, or the (possibly LoRA-trained) text encoders run now."""
        if cached is not None:
            return cached
        return encode_tokens(self._base[0], input_ids, clip_skip=self.clip_skip)

    def forward(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        input_ids: list[torch.Tensor] | None = None,
        cached: tuple[torch.Tensor, torch.Tensor | None] | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden, pooled = self.condition(input_ids, cached)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = self.scheduler.get_velocity(latents, noise, timesteps) if self.v_pred else noise
        unet_dtype = next(self.unet.parameters()).dtype
        extra = {}
        if self.is_sdxl:
            extra["added_cond_kwargs"] = {
                "text_embeds": pooled.to(unet_dtype),
                "time_ids": time_ids.to(unet_dtype),
            }
        pred = self.unet(noisy.to(unet_dtype), timesteps, hidden.to(unet_dtype), **extra).sample
        loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none").mean(
            dim=(1, 2, 3)
        )
        if self.min_snr_gamma:
            acp = self.alphas_cumprod.to(latents.device)
            loss = loss * min_snr_weights(acp, timesteps, self.min_snr_gamma, self.v_pred)
        return loss.mean()
