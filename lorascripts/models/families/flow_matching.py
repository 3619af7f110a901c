"""The flow-matching training objective shared by the diffusion-transformer families (FLUX.1; Z-Image next).

Rectified flow as diffusers' `FlowMatchEulerDiscreteScheduler` and its FLUX/SD3 training scripts define it: a
sigma in (0, 1) mixes the clean latent and the noise, `x_σ = (1 − σ)·x + σ·ε`, and the model predicts the
velocity `ε − x`. What the recipes differ in is how sigmas are drawn (kohya sd-scripts' `timestep_sampling`):

- `uniform`: σ ~ U(0, 1);
- `sigmoid`: σ = sigmoid(scale · N(0, 1)) (SimpleTuner, ai-toolkit);
- `logit_normal`: σ = sigmoid(N(mean, std)) (SD3 paper; diffusers' `compute_density_for_timestep_sampling`);
- `shift`: the sigmoid draw moved towards noise as the scheduler's `shift` moves its sigmas,
  `σ' = s·σ / (1 + (s − 1)·σ)` (kohya's FLUX recipe: s = 3.1582).

Loss weights: `none`, or diffusers' SD3 schemes `sigma_sqrt` and `cosmap`. Every draw is made on the CPU from the
step's seed, so an exact resume reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import StepNoise

TIMESTEP_SAMPLING = ("sigmoid", "logit_normal", "uniform", "shift")
LOSS_WEIGHTING = ("none", "sigma_sqrt", "cosmap")
# sigmas are kept inside (0, 1): sigma_sqrt weights divide by σ², and σ = 1 is pure noise with no signal left
SIGMA_EPS = 1e-4


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """FlowMatchEulerDiscreteScheduler's static shift: `s·σ / (1 + (s − 1)·σ)` (s > 1 moves towards noise)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


@dataclass(frozen=True)
class FlowSettings:
    """How sigmas are drawn and weighted (the config's `timestep_sampling`, `discrete_flow_shift`, ...)."""

    timestep_sampling: str = "shift"
    discrete_flow_shift: float = 3.1582
    sigmoid_scale: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    loss_weighting: str = "none"

    def __post_init__(self) -> None:
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(
                f"timestep_sampling {self.timestep_sampling!r} is not one of {', '.join(TIMESTEP_SAMPLING)}"
            )
        if self.loss_weighting not in LOSS_WEIGHTING:
            raise ValueError(
                f"loss_weighting {self.loss_weighting!r} is not one of {', '.join(LOSS_WEIGHTING)}"
            )
        if self.discrete_flow_shift <= 0:
            raise ValueError(f"discrete_flow_shift must be > 0, got {self.discrete_flow_shift}")


class FlowMatchingObjective:
    """Velocity prediction on straight noise-to-data paths; timesteps are sigmas in (0, 1).

    `timestep_scale` maps a sigma to what the denoiser takes: FLUX's transformer takes σ itself (FluxPipeline
    passes `timestep / 1000` with timesteps = σ·1000 and the model multiplies by 1000 again).
    """

    def __init__(self, settings: FlowSettings, *, timestep_scale: float = 1.0) -> None:
        self.settings = settings
        self.timestep_scale = timestep_scale

    def sample_sigmas(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """`batch` sigmas drawn by the configured scheme."""
        s = self.settings
        if s.timestep_sampling == "uniform":
            sigmas = torch.rand((batch,), generator=generator)
        elif s.timestep_sampling == "logit_normal":
            from diffusers.training_utils import compute_density_for_timestep_sampling

            sigmas = compute_density_for_timestep_sampling(
                "logit_normal", batch, logit_mean=s.logit_mean, logit_std=s.logit_std, generator=generator
            )
        else:
            sigmas = torch.sigmoid(s.sigmoid_scale * torch.randn((batch,), generator=generator))
            if s.timestep_sampling == "shift":
                sigmas = shift_sigmas(sigmas, s.discrete_flow_shift)
        return sigmas.clamp(SIGMA_EPS, 1.0 - SIGMA_EPS)

    def draw(self, shape: tuple[int, ...], seed: int, noise_offset: float) -> StepNoise:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(shape, generator=generator)
        if noise_offset:
            noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator)
        return StepNoise(noise, self.sample_sigmas(shape[0], generator))

    def noisy_input(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = timesteps.to(latents.device, torch.float32).view(-1, *([1] * (latents.dim() - 1)))
        noisy = (1.0 - sigma) * latents.float() + sigma * noise.float()
        return noisy.to(latents.dtype), (noise.float() - latents.float()).to(latents.dtype)

    def model_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        return timesteps * self.timestep_scale

    def validation_timesteps(self, count: int) -> torch.Tensor:
        """`count` sigmas at the centres of equal slices of (0, 1) (4 -> 0.125, 0.375, 0.625, 0.875)."""
        return torch.tensor([(k + 0.5) / count for k in range(count)], dtype=torch.float32)

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        if self.settings.loss_weighting == "none":
            return None
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        return compute_loss_weighting_for_sd3(self.settings.loss_weighting, timesteps.float())
