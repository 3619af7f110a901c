"""`base_weights`: LoRA files merged into the frozen base before the run's LoRA (Z-Image Turbo's de-distillation
adapter, in ai-toolkit's keys): the model trained on is base + adapter, exactly and as diffusers applies it; the
saved LoRA holds only the run's modules and names the adapter; resume merges it again; a file of another family
is refused by name; SD1 takes it alike."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from helpers_train import largest_difference, make_dataset, tiny_config, train_stopped_and_resumed
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_zimage import _load, _output

from lorascripts.config import config_from_dict
from lorascripts.errors import ConfigError, ModelError
from lorascripts.run.events import EventSink
from lorascripts.train.run_parts import build_parts
from lorascripts.train.trainer import total_steps_for, train

# the adapter's layers in ai-toolkit's keys (diffusers module names under `diffusion_model.`)
ADAPTED = (
    "layers.0.attention.to_q",
    "layers.0.attention.to_k",
    "layers.0.attention.to_v",
    "layers.1.attention.to_out.0",
)


def _adapter(denoiser: torch.nn.Module, path: Path, rank: int = 2) -> Path:
    """An ai-toolkit-keyed LoRA (lora_A/lora_B, no alpha: scale 1) on ADAPTED, with non-zero ups."""
    gen = torch.Generator().manual_seed(7)
    layers = dict(denoiser.named_modules())
    tensors = {}
    for name in ADAPTED:
        out_f, in_f = layers[name].weight.shape
        tensors[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) * 0.1
        tensors[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * 0.1
    save_file(tensors, str(path))
    return path


def _parts(cfg: dict):  # noqa: ANN202
    """The run's parts up to the attached LoRA: the model it trains on."""
    parts = build_parts(config_from_dict(cfg), total_steps_for)
    parts.setup_rest(EventSink(None))
    return parts


def test_zimage_trains_on_base_plus_adapter_and_saves_only_its_own_lora(
    tiny_zimage, tmp_path: Path, caplog
) -> None:
    base = _load(tiny_zimage)
    adapter = _adapter(base.denoiser, tmp_path / "zimage_turbo_training_adapter.safetensors")
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_zimage, data, tmp_path / "a", max_train_steps=2, text_max_length=16,
                      base_weights=[str(adapter)], base_weights_multiplier=[0.5], model_variant="turbo")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="lorascripts"):
        parts = _parts(cfg)
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "Z-Image Turbo" in r.getMessage()]
    assert said and all(level == logging.INFO for level, _ in said), (
        said
    )  # the adapter: no distillation warning
    assert adapter.name in said[0][1]
    try:
        trained_on = dict(parts.base.denoiser.named_modules())
        plain = dict(base.denoiser.named_modules())
        tensors = load_file(str(adapter))
        for name in ADAPTED:
            down, up = (
                tensors[f"diffusion_model.{name}.lora_A.weight"],
                tensors[f"diffusion_model.{name}.lora_B.weight"],
            )
            expected = plain[name].weight.float() + 0.5 * (up @ down)
            assert torch.equal(trained_on[name].weight.detach().cpu(), expected), name
        untouched = "layers.1.attention.to_q"
        assert torch.equal(trained_on[untouched].weight.detach().cpu(), plain[untouched].weight)
        parts.network.set_multiplier(0.0)  # the run's own LoRA off: the model alone
        parts.base.extra["config"] = base.extra["config"]
        mine = _output(parts.base)
    finally:
        parts.close()
    # diffusers' own LoRA loader on the plain model, at the same strength, gives the same transformer
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline(None, None, None, None, base.denoiser)
    pipe.load_lora_weights(str(adapter), adapter_name="adapter")
    pipe.set_adapters(["adapter"], [0.5])
    theirs = _output(base)
    assert (mine - theirs).abs().max() < 1e-4, f"differs from diffusers by {(mine - theirs).abs().max()}"

    result = train(config_from_dict(cfg))
    keys = load_file(str(result.lora_path)).keys()
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert any("layers_1_attention_to_q" in k or "layers_1_attention_qkv" in k for k in keys)  # own modules
    with safe_open(str(result.lora_path), "pt") as fh:
        recorded = json.loads(fh.metadata()["ls_base_weights"])
    assert [(r["file"], r["multiplier"], len(r["sha256"])) for r in recorded] == [(adapter.name, 0.5, 12)]
    card = json.loads(result.lora_path.with_suffix(".json").read_text(encoding="utf-8"))
    assert adapter.name in card["notes"]


def test_resume_merges_the_base_weights_again(tiny_zimage, tmp_path: Path) -> None:
    """Stopped and resumed, the run ends with the uninterrupted run's weights: the resumed run trained on base +
    adapter again (without the adapter its gradients, and so its weights, would differ)."""
    base = _load(tiny_zimage)
    adapter = _adapter(base.denoiser, tmp_path / "adapter.safetensors")
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_zimage, data, tmp_path / "ref", max_train_steps=3, text_max_length=16,
                      base_weights=[str(adapter)])  # fmt: skip
    ref = train(config_from_dict(cfg))
    plain = train(config_from_dict({**cfg, "output_dir": str(tmp_path / "plain"), "base_weights": []}))
    assert largest_difference(ref.lora_path, plain.lora_path) > 1e-4, "the adapter changed nothing"
    resumed = train_stopped_and_resumed(cfg, tmp_path / "cut", 1)
    worst = largest_difference(ref.lora_path, resumed.lora_path)
    assert worst < 1e-6, f"resumed weights differ from an uninterrupted run by {worst}"


def test_wrong_family_or_missing_base_weights_are_refused_by_name(
    tiny_zimage, tiny_sd1, tmp_path: Path
) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    sd_lora = tmp_path / "sd_style.safetensors"
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file(
        {f"{name}.lora_down.weight": torch.zeros(2, 32), f"{name}.lora_up.weight": torch.zeros(32, 2)},
        str(sd_lora),
        metadata={"ss_base_model_version": "sd_v1"},
    )
    cfg = tiny_config(tiny_zimage, data, tmp_path / "z", text_max_length=16, base_weights=[str(sd_lora)])
    with pytest.raises(ModelError, match=r"base_weights sd_style\.safetensors is a SD1 LoRA.*Z-Image"):
        train(config_from_dict(cfg))
    with pytest.raises(ConfigError, match=r"base_weights file .*nowhere\.safetensors does not exist"):
        train(config_from_dict({**cfg, "base_weights": [str(tmp_path / "nowhere.safetensors")]}))
    with pytest.raises(ConfigError, match=r"`base_weights_multiplier` has 2 values for 1"):
        config_from_dict({**cfg, "base_weights_multiplier": [1.0, 0.5]})


def test_sd1_merges_base_weights_too(tiny_sd1, tmp_path: Path) -> None:
    """Generic: an SD1 kohya LoRA as base weights changes exactly its layer of the U-Net."""
    from lorascripts.models import load_base_model

    plain = load_base_model(str(tiny_sd1.single_file), tokenizer_path=str(tiny_sd1.tokenizer_dir))
    layer = dict(plain.denoiser.named_modules())["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    out_f, in_f = layer.weight.shape
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    down, up = torch.randn(2, in_f) * 0.1, torch.randn(out_f, 2) * 0.1
    lora = save_file(
        {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(1.0)},
        str(tmp_path / "sd_base.safetensors"),
    )
    del lora
    cfg = tiny_config(tiny_sd1, make_dataset(tmp_path / "data", n=2), tmp_path / "s",
                      base_weights=[str(tmp_path / "sd_base.safetensors")])  # fmt: skip
    parts = _parts(cfg)
    try:
        merged = dict(parts.base.denoiser.named_modules())[
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        ]
        expected = layer.weight.float() + (up @ down) * 0.5  # alpha 1 / rank 2
        assert torch.equal(merged.weight.detach().cpu(), expected)
    finally:
        parts.close()
