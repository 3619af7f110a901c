"""The Stable Diffusion training objective: DDPM noise, integer timesteps, epsilon or v targets, min-SNR weights."""

from __future__ import annotations

from typing import Any

import torch

from ..base import StepNoise


def sd_noise_scheduler(prediction_type: str = "epsilon") -> Any:
    """The noise schedule every SD1/SD2/SDXL checkpoint was trained with."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def scheduler_from_config(config: dict[str, Any] | None, prediction_type: str) -> Any:
    """The model's own DDPM schedule when its folder has one, else the standard SD schedule."""
    from diffusers import DDPMScheduler

    if config:
        return DDPMScheduler.from_config(config, prediction_type=prediction_type)
    return sd_noise_scheduler(prediction_type)


def min_snr_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, v_pred: bool
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), for epsilon or v targets."""
    alpha = alphas_cumprod[timesteps]
    snr = alpha / (1.0 - alpha)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1.0) if v_pred else clipped / snr


class DDPMObjective:
    """Noise prediction (epsilon or v) on the DDPM schedule of the base model."""

    def __init__(self, scheduler: Any, prediction_type: str, min_snr_gamma: float | None) -> None:
        self.scheduler = scheduler
        self.v_pred = prediction_type == "v_prediction"
        self.min_snr_gamma = min_snr_gamma
        self.alphas_cumprod = scheduler.alphas_cumprod.clone().float()

    def draw(self, shape: tuple[int, ...], seed: int, noise_offset: float) -> StepNoise:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(shape, generator=generator)
        if noise_offset:
            noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator)
        steps = self.scheduler.config.num_train_timesteps
        return StepNoise(noise, torch.randint(0, steps, (shape[0],), generator=generator))

    def noisy_input(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = self.scheduler.get_velocity(latents, noise, timesteps) if self.v_pred else noise
        return noisy, target

    def model_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        return timesteps

    def validation_timesteps(self, count: int) -> torch.Tensor:
        """`count` steps at the centres of equal slices of the schedule (4 -> 125, 375, 625, 875 of 1000)."""
        steps = self.scheduler.config.num_train_timesteps
        return torch.tensor([int((k + 0.5) * steps / count) for k in range(count)], dtype=torch.long)

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        if not self.min_snr_gamma:
            return None
        if self.alphas_cumprod.device != timesteps.device:  # moved once, not every step
            self.alphas_cumprod = self.alphas_cumprod.to(timesteps.device)
        return min_snr_weights(self.alphas_cumprod, timesteps, self.min_snr_gamma, self.v_pred)
