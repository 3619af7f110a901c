"""The CPU fast paths of a training step give the library's results: the LoRA layer with its scale folded into
the up weight (lorascripts/network/cpu_lora.py) against lycoris' own LoConModule, outputs and gradients; and the
FLUX.1 rotary table cache (lorascripts/models/rotary_cache.py) against diffusers' position embedder."""

from __future__ import annotations

import copy

import pytest
import torch
from lycoris.modules.locon import LoConModule

from lorascripts.models.rotary_cache import RotaryCache, cache_rotary
from lorascripts.network.cpu_lora import CpuFoldedLoConModule


def _pair(base: torch.nn.Module, **kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same base layer twice, hooked by lycoris' module and by ours with equal (non-zero) weights."""
    twin = copy.deepcopy(base)
    ref = LoConModule("ref", base, lora_dim=4, alpha=2, bypass_mode=True, **kwargs)
    ours = CpuFoldedLoConModule("ours", twin, lora_dim=4, alpha=2, bypass_mode=True, **kwargs)
    torch.nn.init.normal_(ref.lora_up.weight)
    ours.load_state_dict(ref.state_dict())
    ref.apply_to()
    ours.apply_to()
    return ref, ours


def _run(base: torch.nn.Module, x: torch.Tensor, autocast: bool) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        out = base(x)
    out.float().square().sum().backward()
    return out.detach().float()


@pytest.mark.parametrize(
    ("dtype", "autocast", "tolerance"),
    [(torch.float32, False, 1e-6), (torch.bfloat16, False, 0.02), (torch.float32, True, 0.02)],
)
@pytest.mark.parametrize("multiplier", [1.0, 0.6])
def test_folded_lora_layer_gives_lycoris_outputs_and_gradients(
    dtype, autocast, tolerance, multiplier
) -> None:
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 24).to(dtype).requires_grad_(False)
    ref, ours = _pair(base)
    ref.multiplier = ours.multiplier = multiplier
    x = torch.randn(3, 5, 16, dtype=dtype)
    out_ref = _run(ref.org_module[0], x, autocast)
    out_ours = _run(ours.org_module[0], x, autocast)
    assert out_ref.dtype == out_ours.dtype
    scale = out_ref.abs().max()
    assert (out_ref - out_ours).abs().max() <= tolerance * scale
    for name in ("lora_up", "lora_down"):
        g_ref = getattr(ref, name).weight.grad
        g_ours = getattr(ours, name).weight.grad
        assert g_ours is not None and g_ours.abs().max() > 0
        assert (g_ref - g_ours).abs().max() <= tolerance * g_ref.abs().max(), name
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        plain = ours.org_forward(x).float()
    assert (out_ours - plain).abs().max() > 10 * tolerance * scale  # the LoRA term is there


def test_layers_the_fold_does_not_cover_take_lycoris_path() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1).requires_grad_(False)
    ref, ours = _pair(conv)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(_run(ref.org_module[0], x, False), _run(ours.org_module[0], x, False))
    # dropout: the same random draws give the same result only if the same code runs
    ref, ours = _pair(torch.nn.Linear(16, 24).requires_grad_(False), dropout=0.5, rank_dropout=0.3)
    x = torch.randn(3, 16)
    torch.manual_seed(5)
    a = _run(ref.org_module[0], x, False)
    torch.manual_seed(5)
    b = _run(ours.org_module[0], x, False)
    assert torch.equal(a, b)
    assert not ours._folds(x)


def test_rotary_cache_returns_the_embedders_table_and_recomputes_for_new_ids() -> None:
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    inner = FluxPosEmbed(theta=10000, axes_dim=[4, 6, 6])
    holder = torch.nn.Module()
    holder.pos_embed = inner
    cache_rotary(holder)
    cache_rotary(holder)  # once
    assert isinstance(holder.pos_embed, RotaryCache) and holder.pos_embed.inner is inner
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(5.0), indexing="ij"), -1)
    ids = ids.reshape(-1, 3)
    first = holder.pos_embed(ids)
    for got, want in zip(first, inner(ids), strict=True):
        assert torch.equal(got, want)
    assert holder.pos_embed(ids.clone()) is first  # equal ids: the kept table
    moved = ids.clone()
    moved[:, 2] += 1
    second = holder.pos_embed(moved)
    assert second is not first
    for got, want in zip(second, inner(moved), strict=True):
        assert torch.equal(got, want)
    assert holder.state_dict() == {}  # nothing saved with the model
