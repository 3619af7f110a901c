"""The attention kernel of a diffusion transformer's training call (lorascripts/models/attention.py): on a CPU in
bf16 a small attention runs as matmuls (torch's math SDPA with bf16 reductions, through diffusers' dispatcher)
and gives the fused kernel's result and gradients within bf16 precision; everything else keeps the fused kernel,
and the process-wide torch flag is back as it was after the call, also when the call fails."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lorascripts.models import attention
from lorascripts.models.families.flux1.predict import predict

FUSED = "aten::_scaled_dot_product_flash_attention_for_cpu"


def _transformer() -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    return model.to(torch.bfloat16).requires_grad_(False)


def _step(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Output and input gradient of one prediction with grad, and the attention operators it ran."""
    gen = torch.Generator().manual_seed(1)
    noisy = torch.randn(2, 16, 8, 8, generator=gen).requires_grad_(True)
    cond = {"hidden": torch.randn(2, 12, 32, generator=gen), "pooled": torch.randn(2, 24, generator=gen)}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = predict(model, noisy, torch.tensor([0.3, 0.7]), cond, 1.0)
        out.float().square().mean().backward()
    ops = [e.key for e in prof.key_averages() if "attention" in e.key or e.key == "aten::bmm"]
    return out.detach().float(), noisy.grad.float(), ops


def test_small_bf16_attention_on_cpu_runs_as_matmuls_with_the_fused_result(monkeypatch) -> None:
    model = _transformer()
    assert not torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    out, grad, ops = _step(model)
    assert FUSED not in ops and "aten::bmm" in ops, ops
    assert not torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()  # restored after the call

    monkeypatch.setattr(attention, "MATH_SCORES_BYTES", 0)  # too large for the math kernel: the fused one
    fused_out, fused_grad, fused_ops = _step(model)
    assert FUSED in fused_ops
    assert (out - fused_out).abs().max() <= 0.02 * fused_out.abs().max()
    assert (grad - fused_grad).abs().max() <= 0.05 * fused_grad.abs().max()
    assert torch.corrcoef(torch.stack([grad.flatten(), fused_grad.flatten()]))[0, 1] > 0.999


def test_math_attention_only_for_small_bf16_calls_on_cpu() -> None:
    cpu, cuda, bf16 = torch.device("cpu"), torch.device("cuda"), torch.bfloat16
    assert attention.use_math_attention(cpu, bf16, 2, 3, 384)  # the tiny FLUX benchmark
    # fp32: the fused kernel is as fast; GPU kernels are another story
    assert not attention.use_math_attention(cpu, torch.float32, 2, 3, 384)
    assert not attention.use_math_attention(cuda, bf16, 2, 3, 384)
    assert not attention.use_math_attention(cpu, bf16, 1, 24, 768)  # FLUX.1 at 256 px: 27 MB of scores
    # gradient checkpointing recomputes in the backward, outside the switch: one kernel for both passes
    assert not attention.use_math_attention(cpu, bf16, 2, 3, 384, checkpointed=True)


def test_flag_is_restored_when_the_call_fails() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with attention.dit_attention(torch.device("cpu"), torch.bfloat16, 1, 1, 8):
            assert torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
            raise RuntimeError("boom")
    assert not torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
