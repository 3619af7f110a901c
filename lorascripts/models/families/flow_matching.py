"""The flow-matching training objective shared by the diffusion-transformer families (FLUX.1, Z-Image).

Rectified flow as diffusers' `FlowMatchEulerDiscreteScheduler` and its FLUX/SD3 training scripts define it: a
sigma in (0, 1) mixes the clean latent and the noise, `x_σ = (1 − σ)·x + σ·ε`, and the model predicts the
velocity `ε − x`. What the recipes differ in is how sigmas are drawn (kohya sd-scripts' `timestep_sampling`):

- `uniform`: σ ~ U(0, 1);
- `sigmoid`: σ = sigmoid(scale · N(0, 1)) (SimpleTuner, ai-toolkit);
- `logit_normal`: σ = sigmoid(N(mean, std)) (SD3 paper; diffusers' `compute_density_for_timestep_sampling`);
- `shift`: the sigmoid draw moved towards noise as the scheduler's `shift` moves its sigmas,
  `σ' = s·σ / (1 + (s − 1)·σ)` (kohya's FLUX recipe: s = 3.1582);
- `flux_shift`: the sigmoid draw moved by the resolution-dependent shift of diffusers' `use_dynamic_shifting`
  (FluxPipeline's `calculate_shift`): μ grows linearly with the image's token count from `base_shift` at
  `base_seq_len` to `max_shift` at `max_seq_len`, and `σ' = e^μ / (e^μ + 1/σ − 1)` (kohya's `flux_shift`). The
  family gives these four numbers and its patch size (`DynamicShift`); the token count is the batch's latent
  size over the patch.

Loss weights: `none`, or diffusers' SD3 schemes `sigma_sqrt` and `cosmap`. Every draw is made on the CPU from the
step's seed, so an exact resume reproduces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import StepNoise

TIMESTEP_SAMPLING = ("sigmoid", "logit_normal", "uniform", "shift", "flux_shift")
LOSS_WEIGHTING = ("none", "sigma_sqrt", "cosmap")
# sigmas are kept inside (0, 1): sigma_sqrt weights divide by σ², and σ = 1 is pure noise with no signal left
SIGMA_EPS = 1e-4


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """FlowMatchEulerDiscreteScheduler's static shift: `s·σ / (1 + (s − 1)·σ)` (s > 1 moves towards noise)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


@dataclass(frozen=True)
class DynamicShift:
    """A family's resolution-dependent shift: μ from the image token count (FLUX.1: 0.5 at 256 tokens, 1.15 at
    4096, as its scheduler_config.json and FluxPipeline say); tokens are latent pixels over `patch`²."""

    base_seq_len: int = 256
    max_seq_len: int = 4096
    base_shift: float = 0.5
    max_shift: float = 1.15
    patch: int = 2

    def seq_len(self, latent_shape: tuple[int, ...]) -> int:
        """Image tokens of a latent batch `(B, C, H, W)` (FLUX packs 2×2 latent pixels into one token)."""
        return (latent_shape[-2] // self.patch) * (latent_shape[-1] // self.patch)

    def mu(self, seq_len: int) -> float:
        """diffusers' `calculate_shift`: the line through (base_seq_len, base_shift) and (max_seq_len, max_shift)."""
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return self.base_shift + slope * (seq_len - self.base_seq_len)


def time_shift_sigmas(sigmas: torch.Tensor, mu: float) -> torch.Tensor:
    """FlowMatchEulerDiscreteScheduler's dynamic (exponential) shift with exponent 1: `e^μ / (e^μ + 1/σ − 1)`.

    Hand-written as `shift_sigmas` is: diffusers keeps it a method of a scheduler instance."""
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))


@dataclass(frozen=True)
class FlowSettings:
    """How sigmas are drawn and weighted (the config's `timestep_sampling`, `discrete_flow_shift`, ...)."""

    timestep_sampling: str = "shift"
    discrete_flow_shift: float = 3.1582
    sigmoid_scale: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    loss_weighting: str = "none"
    dynamic_shift: DynamicShift | None = None  # the family's, for `flux_shift`

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
        if self.timestep_sampling == "flux_shift" and self.dynamic_shift is None:
            raise ValueError("timestep_sampling flux_shift needs the family's dynamic shift (base/max shift)")


class FlowMatchingObjective:
    """Velocity prediction on straight noise-to-data paths; timesteps are sigmas in (0, 1).

    `timestep_offset + timestep_scale·σ` is what the denoiser takes: FLUX's transformer takes σ itself
    (FluxPipeline passes `timestep / 1000` with timesteps = σ·1000 and the model multiplies by 1000 again);
    Z-Image's takes 1 − σ (ZImagePipeline passes `(1000 − timestep) / 1000`: offset 1, scale −1).
    """

    def __init__(
        self, settings: FlowSettings, *, timestep_scale: float = 1.0, timestep_offset: float = 0.0
    ) -> None:
        self.settings = settings
        self.timestep_scale = timestep_scale
        self.timestep_offset = timestep_offset

    def sample_sigmas(
        self, batch: int, generator: torch.Generator, latent_shape: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """`batch` sigmas drawn by the configured scheme (`flux_shift` reads the token count off `latent_shape`)."""
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
            elif s.timestep_sampling == "flux_shift":
                dynamic = s.dynamic_shift
                if dynamic is None or latent_shape is None:
                    raise ValueError("flux_shift needs the family's dynamic shift and the latent shape")
                sigmas = time_shift_sigmas(sigmas, dynamic.mu(dynamic.seq_len(latent_shape)))
        return sigmas.clamp(SIGMA_EPS, 1.0 - SIGMA_EPS)

    def draw(self, shape: tuple[int, ...], seed: int, noise_offset: float) -> StepNoise:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(shape, generator=generator)
        if noise_offset:
            noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator)
        return StepNoise(noise, self.sample_sigmas(shape[0], generator, shape))

    def noisy_input(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = timesteps.to(latents.device, torch.float32).view(-1, *([1] * (latents.dim() - 1)))
        noisy = (1.0 - sigma) * latents.float() + sigma * noise.float()
        return noisy.to(latents.dtype), (noise.float() - latents.float()).to(latents.dtype)

    def model_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.timestep_offset + timesteps * self.timestep_scale

    def validation_timesteps(self, count: int) -> torch.Tensor:
        """`count` sigmas at the centres of equal slices of (0, 1) (4 -> 0.125, 0.375, 0.625, 0.875)."""
        return torch.tensor([(k + 0.5) / count for k in range(count)], dtype=torch.float32)

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        if self.settings.loss_weighting == "none":
            return None
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        return compute_loss_weighting_for_sd3(self.settings.loss_weighting, timesteps.float())
