"""Z-Image runs through the engine's paths: Qwen3 outputs cached on disk and preview samples drawn by diffusers'
ZImagePipeline with gradient checkpointing; the memory path (fp8 base file, block swap over `layers`); the
`output_format: diffusers` file (ai-toolkit's keys) passing the self-test and read back by `initial_lora`; the
estimate of the full 6 B Z-Image from its header."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers_train import make_dataset, tiny_config
from safetensors.torch import load_file
from test_flux_memory import _sparse_safetensors, own_precision  # noqa: F401  (a fixture)

from lorascripts.config import config_from_dict
from lorascripts.run.events import read_events
from lorascripts.train.trainer import train

GIB = 1024**3


def _cfg(tiny, data: Path, out: Path, **overrides) -> dict:
    common = dict(model_family="zimage", text_max_length=16, train_text_encoder=False)
    return tiny_config(tiny, data, out, **{**common, **overrides})


def test_cached_text_and_preview_samples_through_zimagepipeline(tiny_zimage, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    cfg = _cfg(
        tiny_zimage, data, tmp_path / "a", max_train_steps=2, cache_text_encoder_outputs="disk",
        cache_dir=str(tmp_path / "cache"), sample_prompts=["zkstyle a red circle"], sample_every_n_steps=2,
        sample_steps=2, gradient_checkpointing=True,
    )  # fmt: skip
    train(config_from_dict(cfg))
    losses = [e["loss"] for e in read_events(tmp_path / "a" / "events.jsonl") if e["event"] == "step"]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    samples = sorted((tmp_path / "a" / "samples").glob("*.png"))
    assert samples, "no preview sample was drawn"
    from PIL import Image

    assert Image.open(samples[0]).size == (32, 32)
    assert sorted((tmp_path / "cache").rglob("*.safetensors")), "no text/latent cache on disk"


def test_fp8_file_with_block_swap_equals_the_run_without_swap(
    tiny_zimage,
    tmp_path: Path,
    caplog,
    own_precision,  # noqa: F811
) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    common = dict(
        base_model=str(tiny_zimage.transformer_fp8), max_train_steps=3, mixed_precision="bf16", fp8_base=True,
        gradient_checkpointing=True, learning_rate=1e-2, cache_text_encoder_outputs="memory",
    )  # fmt: skip
    results = {}
    caplog.set_level(logging.INFO, logger="lorascripts")
    for swap in (0, 1):
        out = tmp_path / f"swap{swap}"
        train(config_from_dict(_cfg(tiny_zimage, data, out, blocks_to_swap=swap, **common)))
        events = read_events(out / "events.jsonl")
        losses = [e["loss"] for e in events if e["event"] == "step"]
        assert len(losses) == 3 and all(0 < v < 10 for v in losses)
        estimate = next(e for e in events if e["event"] == "estimate")
        assert estimate["fp8_base"] and estimate["blocks_to_swap"] == swap
        assert "fp8 base: 16 Linear weights of the Z-Image blocks" in caplog.text  # 2 layers x 8 Linears
        assert ("block swap: 1 of the Z-Image blocks" in caplog.text) == bool(swap)
        caplog.clear()
        results[swap] = load_file(str(out / "tiny.safetensors"))
    ups = [v for k, v in results[1].items() if k.endswith("lora_up.weight")]
    assert ups and all(v.abs().max() > 0 for v in ups)
    assert all(torch.equal(results[0][k], v) for k, v in results[1].items())


def test_diffusers_output_passes_the_selftest_and_continues_as_initial_lora(
    tiny_zimage, tmp_path: Path
) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    train(
        config_from_dict(
            _cfg(tiny_zimage, data, tmp_path / "d", output_format="diffusers", max_train_steps=2)
        )
    )
    path = tmp_path / "d" / "tiny.safetensors"
    keys = set(load_file(str(path)))
    assert "diffusion_model.layers.1.attention.to_v.lora_A.weight" in keys
    assert all(k.startswith("diffusion_model.") and ".lora_" in k for k in keys)
    events = [e for e in read_events(tmp_path / "d" / "events.jsonl") if e["event"] == "self_test"]
    assert events and events[-1]["ok"], events
    train(
        config_from_dict(_cfg(tiny_zimage, data, tmp_path / "i", max_train_steps=1, initial_lora=str(path)))
    )
    after = load_file(str(tmp_path / "i" / "tiny.safetensors"))
    assert after["lora_unet_layers_0_attention_qkv.lora_down.weight"].shape[0] == 12  # q, k, v: rank 4 each


@pytest.fixture(scope="module")
def full_zimage(tmp_path_factory) -> Path:
    """Z-Image's published transformer (6.15 B) in the original layout, as a header over a sparse file."""
    from tiny_zimage import original_state

    from lorascripts.models.families.zimage.webui import PUBLISHED, meta_transformer

    shapes = {k: tuple(v.shape) for k, v in original_state(meta_transformer(PUBLISHED).state_dict()).items()}
    return _sparse_safetensors(
        tmp_path_factory.mktemp("zimage_full") / "z_image_turbo_bf16.safetensors", shapes
    )


def test_full_zimage_estimate_falls_with_fp8_and_swap(full_zimage, tmp_path: Path) -> None:
    from lorascripts.perf.configs import model_shapes
    from lorascripts.perf.estimate import estimate_run

    shapes = model_shapes(str(full_zimage))
    assert shapes.family.name == "zimage" and 6.0e9 < shapes.params["unet"] < 6.3e9
    base = dict(
        base_model=str(full_zimage), train_data_dir=str(tmp_path), resolution=512, lora_rank=16, batch_size=1,
        gradient_checkpointing=True, train_text_encoder=False, cache_text_encoder_outputs="disk",
        cache_latents="disk", mixed_precision="bf16",
    )  # fmt: skip
    runs = [{}, {"fp8_base": True}, {"fp8_base": True, "blocks_to_swap": 15}]
    peaks = [
        estimate_run(
            config_from_dict({**base, **extra}), device="cuda", memory_limit_bytes=24 * GIB
        ).peak_memory_bytes
        for extra in runs
    ]
    assert peaks == sorted(peaks, reverse=True) and len(set(peaks)) == 3, peaks
    assert 11 * GIB < peaks[0] < 30 * GIB  # 6.15 B bf16 weights alone are 11.5 GiB (13.2 GiB at 1024 px)
