"""The pre-flight estimate of a diffusion transformer given as a transformer-only file: its VAE and text encoders
counted from the headers of the part files the loader will read (not FLUX.1's / Z-Image's published sizes), a
part that cannot be found standing in at its published size and named, and on a GPU the peak as the larger of
the caching phase (the VAE, then the text encoders on the device, the transformer not yet) and the training phase
(the cached parts released)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from helpers_train import tiny_config
from test_flux_memory import _sparse_safetensors
from tiny_flux import build_tiny_flux

from lorascripts.config import config_from_dict
from lorascripts.models import load_base_model
from lorascripts.perf.configs import model_shapes
from lorascripts.perf.estimate import estimate_run

GIB, MIB = 2**30, 2**20


@pytest.fixture(scope="module")
def flux(tmp_path_factory, tiny_tokenizer):
    return build_tiny_flux(tmp_path_factory.mktemp("flux_parts"), tiny_tokenizer)


@pytest.fixture(scope="module")
def t5_twins(tmp_path_factory) -> dict[str, Path]:
    """T5-XXL's encoder (4.76 B parameters) as header-only files in fp16, bf16 and fp8 e4m3fn (sparse: no data)."""
    from transformers import T5Config, T5EncoderModel

    from lorascripts.models.families.flux1.estimate import T5_XXL

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in T5EncoderModel(T5Config(**T5_XXL)).state_dict().items()}
    del shapes["encoder.embed_tokens.weight"]  # the tied embedding: stored once, as `shared.weight`
    folder = tmp_path_factory.mktemp("t5_twins")
    names = {"F16": "t5xxl_fp16.safetensors", "BF16": "t5xxl_bf16.safetensors", "F8_E4M3": "t5xxl_fp8_e4m3fn.safetensors"}  # fmt: skip
    return {dtype: _sparse_safetensors(folder / name, shapes, dtype) for dtype, name in names.items()}


def _count(module: torch.nn.Module) -> int:
    """Parameters in memory: T5's embedding is one tensor under two names (`shared`, `encoder.embed_tokens`)."""
    return sum(p.numel() for p in {p.data_ptr(): p for p in module.parameters()}.values())


def _config(flux, tmp_path: Path, **overrides) -> object:
    overrides = {"resolution": 64, "cache_text_encoder_outputs": "memory", **overrides}
    return config_from_dict(tiny_config(flux, tmp_path, tmp_path / "out", **overrides))


def test_tiny_flux_parts_are_read_from_their_files_not_assumed_full_size(flux, tmp_path: Path) -> None:
    """The transformer-only tiny FLUX with its tiny CLIP/T5/VAE in ComfyUI's folders (the benchmark's setting,
    estimated at 19 GiB before): the parts' parameters are the loaded ones, the estimate a few MiB above the
    process."""
    shapes = model_shapes(str(flux.transformer))
    base = load_base_model(str(flux.transformer), tokenizer_path=str(flux.tokenizer_dir))
    loaded = {
        "unet": base.denoiser,
        "vae": base.vae,
        "text": torch.nn.ModuleList(base.text_encoders),
    }
    assert shapes.params == {part: _count(module) for part, module in loaded.items()}
    assert shapes.assumed == []
    assert (
        shapes.text_encoders[1]["d_model"] == base.text_encoders[1].config.d_model
    )  # T5's config: its header
    weights = sum(shapes.params.values()) * 4  # fp32: a tiny model is overhead-bound, auto precision is fp32
    estimate = estimate_run(_config(flux, tmp_path), device="cpu")
    beyond_process = estimate.peak_memory_bytes - estimate.base_rss_bytes
    assert weights < beyond_process < 20 * (weights + shapes.file_bytes), (beyond_process, weights)
    assert beyond_process < 64 * MIB
    assert "assumed" not in estimate.describe()


def test_an_fp8_t5_file_counts_half_the_bytes_of_its_twins_when_loading(flux, t5_twins, tmp_path) -> None:
    """The T5 file the config names is read from its header: an fp8 e4m3fn file is half the bytes of its fp16 /
    bf16 twin while the model loads (CPU memory); the run casts every one to its own dtype, so the training
    phase (and a GPU's memory) is the same for all three."""
    estimates = {
        dtype: estimate_run(  # base_rss_bytes 0: without this process's size, which grows as it runs
            _config(flux, tmp_path, text_encoder_2=str(path), mixed_precision="bf16"),
            device="cpu",
            base_rss_bytes=0,
        )
        for dtype, path in t5_twins.items()
    }
    t5_params = 4_762_310_656
    loading = {dtype: e.loading_memory_bytes for dtype, e in estimates.items()}
    assert loading["F16"] == pytest.approx(loading["BF16"], abs=4096)  # their headers' lengths differ
    assert loading["F16"] - loading["F8_E4M3"] == pytest.approx(t5_params, rel=0.01)  # 1 byte less each
    assert estimates["F8_E4M3"].peak_memory_bytes < estimates["BF16"].peak_memory_bytes
    assert len({e.training_memory_bytes for e in estimates.values()}) == 1
    assert estimates["BF16"].training_memory_bytes > t5_params * 2  # the full T5 in bf16, not the tiny one
    gpu = {
        dtype: estimate_run(
            _config(flux, tmp_path, text_encoder_2=str(path), mixed_precision="bf16"),
            device="cuda",
            memory_limit_bytes=24 * GIB,
        )
        for dtype, path in t5_twins.items()
    }
    assert len({e.peak_memory_bytes for e in gpu.values()}) == 1


def test_gpu_peak_is_the_caching_phase_when_the_cached_t5_leaves_before_the_first_step(
    flux, t5_twins, tmp_path
) -> None:
    """Cached caption outputs: placement.py releases the T5 from the GPU after caching, so training does not hold
    it, but the caching phase does (the text encoders alone: the transformer comes after them): peak =
    max(caching, training), not the training alone nor the sum; captions drawn anew each step keep the T5 in
    training."""
    big_t5 = {"text_encoder_2": str(t5_twins["BF16"]), "mixed_precision": "bf16"}
    cached = estimate_run(_config(flux, tmp_path, **big_t5), device="cuda", memory_limit_bytes=24 * GIB)
    t5_bytes = 4_762_310_656 * 2
    assert cached.training_memory_bytes < t5_bytes < cached.encoding_memory_bytes < t5_bytes + 64 * MIB
    assert cached.peak_memory_bytes == cached.encoding_memory_bytes
    assert "the peak is while the caches fill" in cached.describe()
    kept = estimate_run(
        _config(flux, tmp_path, shuffle_caption=True, **big_t5), device="cuda", memory_limit_bytes=24 * GIB
    )
    assert kept.training_memory_bytes > t5_bytes and kept.peak_memory_bytes == kept.training_memory_bytes
    assert kept.peak_memory_bytes < cached.peak_memory_bytes + GIB  # the T5 counted once, not twice


def test_a_part_not_found_falls_back_to_the_published_size_and_says_so(flux, tmp_path: Path, caplog) -> None:
    alone = tmp_path / "alone" / "flux1-tiny.safetensors"
    alone.parent.mkdir()
    shutil.copy(flux.transformer, alone)
    with caplog.at_level(logging.INFO, logger="lorascripts.perf.configs"):
        shapes = model_shapes(str(alone))
    assert [label.split(" ")[0] for label in shapes.assumed] == ["VAE", "CLIP-L", "T5-XXL"]
    assert shapes.text_encoders[1]["d_model"] == 4096 and shapes.params["text"] > 4.8e9
    assert (
        "ae.safetensors" in caplog.text and "Set `text_encoder_2`" in caplog.text
    )  # the loader's own message
    named = {"vae": str(flux.root / "models" / "vae" / "ae.safetensors"), "text_encoder_2": str(tmp_path / "no.safetensors")}  # fmt: skip
    shapes = model_shapes(str(alone), {**named, "text_encoder": None})
    assert [label.split(" ")[0] for label in shapes.assumed] == ["CLIP-L", "T5-XXL"]
    estimate = estimate_run(
        config_from_dict(tiny_config(flux, tmp_path, tmp_path / "o", base_model=str(alone), **named))
    )
    assert "published sizes are assumed: CLIP-L (clip_l.safetensors), T5-XXL" in estimate.describe()


def test_zimage_parts_come_from_their_files(tiny_zimage, tmp_path: Path) -> None:
    shapes = model_shapes(str(tiny_zimage.transformer))
    base = load_base_model(str(tiny_zimage.transformer), tokenizer_path=str(tiny_zimage.tokenizer_dir))
    assert shapes.assumed == []
    assert shapes.params["text"] == _count(base.text_encoders[0])
    assert shapes.params["vae"] == _count(base.vae)
    assert shapes.text_encoders[0]["hidden_size"] == base.text_encoders[0].config.hidden_size
    alone = tmp_path / "z_image_tiny.safetensors"
    shutil.copy(tiny_zimage.transformer, alone)
    missing = model_shapes(str(alone))
    assert [label.split(" ")[0] for label in missing.assumed] == ["Qwen3-4B", "VAE"]
    assert missing.params["text"] == 4_022_468_096


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_sd_all_in_one_files_count_every_part_as_loaded(family, request) -> None:
    """SD / SDXL single files hold their VAE and text encoders: the header's counts are the loaded modules'."""
    tiny = request.getfixturevalue(f"tiny_{family}")
    shapes = model_shapes(str(tiny.single_file), {"text_encoder": str(tiny.single_file)})  # SD takes no parts
    base = load_base_model(str(tiny.single_file), tokenizer_path=str(tiny.tokenizer_dir))
    loaded = {"unet": base.denoiser, "vae": base.vae, "text": torch.nn.ModuleList(base.text_encoders)}
    assert shapes.params == {part: _count(module) for part, module in loaded.items()}
    assert shapes.file_bytes == tiny.single_file.stat().st_size and not shapes.assumed
