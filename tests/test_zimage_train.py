"""Z-Image runs through the engine's paths: Qwen3 outputs cached on disk and preview samples drawn by diffusers'
ZImagePipeline with gradient checkpointing; the memory path (fp8 base file, block swap over `layers`); the
`output_format: diffusers` file (ai-toolkit's keys) passing the self-test and read back by `initial_lora`; the
estimate of the full 6 B Z-Image from its header."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from helpers_train import make_dataset, tiny_config
from safetensors import safe_open
from safetensors.torch import load_file
from test_flux_memory import _sparse_safetensors, own_precision  # noqa: F401  (a fixture)

from lorascripts.config import config_from_dict
from lorascripts.run.events import read_events
from lorascripts.train.trainer import train

GIB = 1024**3


def _cfg(tiny, data: Path, out: Path, **overrides) -> dict:
    common = dict(model_family="zimage", text_max_length=16)  # train_text_encoder: the family's (false)
    return tiny_config(tiny, data, out, **{**common, **overrides})


def test_base_run_takes_the_family_defaults_and_previews_with_base_settings(
    tiny_zimage, tmp_path: Path
) -> None:
    """A Z-Image Base run that leaves shift, text encoder and sample settings unset trains with Z-Image's (shift
    3.0, Qwen3 frozen, its outputs cached), records them, and draws previews through ZImagePipeline with Base's
    CFG 4 / 28 steps."""
    data = make_dataset(tmp_path / "data", n=2)
    cfg = _cfg(
        tiny_zimage, data, tmp_path / "a", max_train_steps=2, cache_text_encoder_outputs="disk",
        cache_dir=str(tmp_path / "cache"), sample_prompts=["zkstyle a red circle"], sample_every_n_steps=2,
        gradient_checkpointing=True, model_variant="base",
    )  # fmt: skip
    train(config_from_dict(cfg))
    events = read_events(tmp_path / "a" / "events.jsonl")
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    assert [(e["steps"], e["guidance_scale"]) for e in events if e["event"] == "sample"][:1] == [(28, 4.0)]
    samples = sorted((tmp_path / "a" / "samples").glob("*.png"))
    assert samples, "no preview sample was drawn"
    from PIL import Image

    assert Image.open(samples[0]).size == (32, 32)
    assert sorted((tmp_path / "cache").rglob("*.safetensors")), "no text/latent cache on disk"
    saved = yaml.safe_load((tmp_path / "a" / "tiny.yaml").read_text(encoding="utf-8"))
    assert (saved["discrete_flow_shift"], saved["timestep_sampling"], saved["train_text_encoder"]) == (
        3.0,
        "shift",
        False,
    )
    with safe_open(str(tmp_path / "a" / "tiny.safetensors"), "pt") as fh:
        metadata = fh.metadata()
    filled = json.loads(metadata["ls_family_defaults"])
    assert filled == {"discrete_flow_shift": 3.0, "timestep_sampling": "shift", "train_text_encoder": False}
    assert metadata["ls_zimage_variant"] == "base"


def test_family_defaults_fill_only_unset_keys_and_refuse_a_text_lora(
    tiny_zimage, tmp_path: Path, capsys
) -> None:
    """SD keeps its defaults (text-encoder LoRA, no cache), Z-Image Turbo gets its own, a value set in the config
    wins, and `train_text_encoder: true` on Z-Image is a config error naming the family."""
    from lorascripts.errors import ConfigError
    from lorascripts.models.run_defaults import with_family_defaults

    def filled(base_model: Path | str, **keys):  # noqa: ANN202
        cfg, what = with_family_defaults(
            config_from_dict({"base_model": str(base_model), "train_data_dir": ".", **keys})
        )
        return (cfg.train_text_encoder, cfg.cache_text_encoder_outputs, cfg.discrete_flow_shift), what

    assert filled("toy")[0] == (True, "off", 3.1582)  # the SD toy model: as before families had defaults
    assert filled("toy", cache_text_encoder_outputs="memory")[0] == (False, "memory", 3.1582)
    tiny_zimage = tiny_zimage.transformer
    turbo, what = filled(tiny_zimage)
    assert turbo == (False, "memory", 3.0) and "Z-Image unknown" in what.describe()
    assert filled(tiny_zimage, discrete_flow_shift=2.0, cache_text_encoder_outputs="off")[0] == (
        False,
        "off",
        2.0,
    )
    with pytest.raises(
        ConfigError, match=r"is a Z-Image model, whose LoRA files hold no text-encoder modules"
    ):
        filled(tiny_zimage, train_text_encoder=True)
    # the dry run (`train --print-config`) prints what the run will train with and says where it came from
    from lorascripts.cli import main

    config = tmp_path / "z.yaml"
    config.write_text(
        f"base_model: {tiny_zimage}\ntrain_data_dir: .\nmodel_variant: base\n", encoding="utf-8"
    )
    assert main(["train", "-c", str(config), "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(
        "# family defaults (Z-Image base): timestep_sampling=shift, discrete_flow_shift=3.0"
    )
    assert yaml.safe_load(printed)["cache_text_encoder_outputs"] == "memory"


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
    estimates = [
        estimate_run(config_from_dict({**base, **extra}), device="cuda", memory_limit_bytes=24 * GIB)
        for extra in runs
    ]
    training = [e.training_memory_bytes for e in estimates]
    assert training == sorted(training, reverse=True) and len(set(training)) == 3, training
    # the caches fill with the transformer off the GPU: Qwen3-4B alone (bf16, ~7.5 GiB) then bounds the peak
    assert all(
        e.peak_memory_bytes == max(e.training_memory_bytes, e.encoding_memory_bytes) for e in estimates
    )
    assert all(7 * GIB < e.encoding_memory_bytes < 9 * GIB for e in estimates)
    peaks = [e.peak_memory_bytes for e in estimates]
    assert 11 * GIB < peaks[0] < 30 * GIB  # 6.15 B bf16 weights alone are 11.5 GiB (13.2 GiB at 1024 px)
