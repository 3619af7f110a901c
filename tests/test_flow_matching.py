"""The flow-matching objective: diffusers' scheduler semantics, sampling schemes, determinism, weights."""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from lorascripts.models.families.flow_matching import (
    DynamicShift,
    FlowMatchingObjective,
    FlowSettings,
    shift_sigmas,
    time_shift_sigmas,
)


def _objective(**kw) -> FlowMatchingObjective:
    return FlowMatchingObjective(FlowSettings(**kw))


def test_shift_matches_the_scheduler() -> None:
    plain = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    shifted = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.1582)
    assert torch.allclose(shift_sigmas(plain.sigmas, 3.1582), shifted.sigmas, atol=1e-6)


def test_noisy_input_is_the_schedulers_and_target_is_velocity() -> None:
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 16, 4, 4, generator=gen), torch.randn(2, 16, 4, 4, generator=gen)
    t = scheduler.timesteps[[100, 700]]
    sigmas = t / 1000  # the unshifted schedule: sigma = t / num_train_timesteps
    noisy, target = _objective().noisy_input(x, eps, sigmas)
    expected = torch.cat(
        [scheduler.scale_noise(x[i : i + 1], t[i : i + 1], eps[i : i + 1]) for i in range(2)]
    )
    assert torch.allclose(noisy, expected, atol=1e-5)
    assert torch.equal(target, eps - x)


@pytest.mark.parametrize("latent_side", [16, 64, 128])  # 256 / 1024 / 4096 tokens: 256, 512, 1024 px
def test_flux_shift_is_diffusers_dynamic_shifting(latent_side: int) -> None:
    """mu is FluxPipeline's calculate_shift of the packed token count; the shift is the scheduler's own
    `use_dynamic_shifting` move of its sigmas; a draw is the sigmoid draw moved by it, as kohya's flux_shift."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from lorascripts.models.families import get_family

    dynamic = get_family("flux1").dynamic_shift
    shape = (3, 16, latent_side, latent_side)
    tokens = (latent_side // 2) ** 2
    assert dynamic.seq_len(shape) == tokens
    mu = dynamic.mu(tokens)
    assert mu == pytest.approx(calculate_shift(tokens, 256, 4096, 0.5, 1.15), abs=1e-12)
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    plain = torch.linspace(1.0, 1 / 28, 28)
    scheduler.set_timesteps(sigmas=plain.numpy(), mu=mu)
    assert torch.allclose(time_shift_sigmas(plain, mu), scheduler.sigmas[:-1], atol=1e-6)
    objective = _objective(timestep_sampling="flux_shift", dynamic_shift=dynamic)
    drawn = objective.draw(shape, 11, 0.0).timesteps
    raw = _objective(timestep_sampling="sigmoid").draw(shape, 11, 0.0).timesteps  # the same generator draws
    assert torch.allclose(drawn, time_shift_sigmas(raw, mu).clamp(1e-4, 1 - 1e-4), atol=1e-6)


def test_flux_shift_moves_larger_images_further_towards_noise() -> None:
    objective = _objective(timestep_sampling="flux_shift", dynamic_shift=DynamicShift())
    means = [float(objective.draw((2000, 16, side, side), 4, 0.0).timesteps.mean()) for side in (16, 64, 128)]
    assert means[0] < means[1] < means[2] and means[0] > 0.55  # mu 0.5 already moves the sigmoid's 0.5
    with pytest.raises(ValueError, match="flux_shift needs the family's dynamic shift"):
        FlowSettings(timestep_sampling="flux_shift")


@pytest.mark.parametrize("scheme", ["sigmoid", "logit_normal", "uniform", "shift", "flux_shift"])
def test_draw_is_deterministic_in_the_seed_and_inside_0_1(scheme: str) -> None:
    objective = _objective(timestep_sampling=scheme, dynamic_shift=DynamicShift())
    a, b = objective.draw((64, 16, 2, 2), 7, 0.0), objective.draw((64, 16, 2, 2), 7, 0.0)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)
    assert not torch.equal(a.timesteps, objective.draw((64, 16, 2, 2), 8, 0.0).timesteps)
    assert a.timesteps.dtype == torch.float32 and bool(((a.timesteps > 0) & (a.timesteps < 1)).all())


def test_shift_moves_sigmas_towards_noise_and_offset_changes_noise() -> None:
    sig = _objective(timestep_sampling="sigmoid").draw((4000, 1, 1, 1), 3, 0.0).timesteps
    shifted = _objective(timestep_sampling="shift", discrete_flow_shift=3.1582).draw((4000, 1, 1, 1), 3, 0.0)
    assert abs(float(sig.mean()) - 0.5) < 0.03
    assert float(shifted.timesteps.mean()) > 0.65
    plain = _objective().draw((2, 4, 3, 3), 5, 0.0).noise
    assert not torch.equal(_objective().draw((2, 4, 3, 3), 5, 0.1).noise, plain)


def test_model_timesteps_validation_and_weights() -> None:
    objective = _objective()
    t = torch.tensor([0.25, 0.75])
    assert torch.equal(objective.model_timesteps(t), t)  # FluxPipeline passes sigma (= timestep / 1000)
    assert objective.validation_timesteps(4).tolist() == [0.125, 0.375, 0.625, 0.875]
    assert objective.loss_weights(t) is None
    cosmap = _objective(loss_weighting="cosmap").loss_weights(t)
    assert torch.allclose(cosmap, 2 / (torch.pi * (1 - 2 * t + 2 * t**2)))
    assert torch.allclose(_objective(loss_weighting="sigma_sqrt").loss_weights(t), t**-2)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="timestep_sampling 'linear'"):
        FlowSettings(timestep_sampling="linear")
    with pytest.raises(ValueError, match="discrete_flow_shift"):
        FlowSettings(discrete_flow_shift=0)
