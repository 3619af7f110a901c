"""The toolbox on Z-Image LoRA files trained by our trainer on the tiny Z-Image (2 steps): inspect, self-test
against the transformer file, merge of two Z-Image LoRAs and into the transformer file, extract, resize, convert
to ai-toolkit's keys and back, and each tool refusing an SD or FLUX file given as Z-Image by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_train import make_dataset, tiny_config
from safetensors.torch import load_file, save_file

from lorascripts.config import config_from_dict
from lorascripts.errors import ModelError
from lorascripts.network.save import read_lora_weights
from lorascripts.toolbox.inspect import inspect_lora
from lorascripts.toolbox.lorafile import group_modules
from lorascripts.toolbox.merge import merge_into_checkpoint, merge_loras
from lorascripts.toolbox.resize import resize_lora
from lorascripts.toolbox.selftest import self_test
from lorascripts.train.trainer import train

QKV = "lora_unet_layers_0_attention_qkv"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_zimage, tiny_sd1) -> dict[str, Path]:
    """Two Z-Image LoRAs and one SD1 LoRA (2 steps each), a FLUX.1-named LoRA, the checkpoints."""
    root = tmp_path_factory.mktemp("zimage_toolbox")
    data = make_dataset(root / "data", n=2)
    out = {"zimage_ckpt": tiny_zimage.transformer, "sd1_ckpt": tiny_sd1.single_file}
    for name, model, seed in (("z_a", tiny_zimage, 1), ("z_b", tiny_zimage, 2), ("sd1", tiny_sd1, 1)):
        cfg = tiny_config(model, data, root / name, max_train_steps=2, seed=seed, output_name=name)
        cfg["learning_rate"] = 1e-2
        if name.startswith("z_"):
            cfg.update(model_family="zimage", text_max_length=16, train_text_encoder=False)
        train(config_from_dict(cfg))
        out[name] = root / name / f"{name}.safetensors"
    flux = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(4, 64),
            "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(192, 4),
            "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(4.0)}  # fmt: skip
    save_file(flux, str(root / "flux.safetensors"), metadata={"ss_base_model_version": "flux1"})
    out["flux"] = root / "flux.safetensors"
    return out


def _deltas(path: Path) -> dict[str, torch.Tensor]:
    return {name: m.delta() for name, m in group_modules(read_lora_weights(path)[0]).items()}


def test_inspect_and_selftest_name_zimage_and_apply_every_module(files) -> None:
    info = inspect_lora(files["z_a"])
    assert info["family"] == "zimage"
    report = self_test(files["z_a"], files["zimage_ckpt"])
    assert report.ok and report.webui.applied == len(_deltas(files["z_a"])), report.summary()
    assert report.lora_family == report.base_family == "zimage"
    wrong = self_test(files["sd1"], files["zimage_ckpt"])
    assert not wrong.ok and "trained for SD1 but the base model is Z-Image" in wrong.problems[0]
    wrong = self_test(files["z_a"], files["sd1_ckpt"])
    assert not wrong.ok and "trained for Z-Image but the base model is SD1" in wrong.problems[0]


def test_merge_two_loras_and_into_the_transformer_file(files, tmp_path: Path) -> None:
    out = merge_loras([(files["z_a"], 1.0), (files["z_b"], 0.5)], tmp_path / "m.safetensors")
    a, b, merged = _deltas(files["z_a"]), _deltas(files["z_b"]), _deltas(out)
    assert inspect_lora(out)["family"] == "zimage" and set(merged) == set(a)
    want = a[QKV] + 0.5 * b[QKV]
    assert want.norm() > 0 and torch.allclose(merged[QKV], want, atol=1e-6 * want.abs().max().item())
    tuned = tmp_path / "tuned.safetensors"
    counts = merge_into_checkpoint(files["zimage_ckpt"], [(files["z_a"], 1.0)], tuned)
    assert counts == {"merged": len(a), "skipped": 0}
    before, after = load_file(str(files["zimage_ckpt"])), load_file(str(tuned))
    change = after["layers.0.attention.qkv.weight"].float() - before["layers.0.attention.qkv.weight"].float()
    assert (change - a[QKV]).abs().max() < 0.02 * a[QKV].abs().max() + 1e-2 * before[
        "layers.0.attention.qkv.weight"
    ].float().abs().max()  # the file is bf16
    assert torch.equal(before["x_embedder.weight"], after["x_embedder.weight"])


def test_resize_and_convert_round_trip(files, tmp_path: Path) -> None:
    from lorascripts.toolbox.convert import to_diffusers, to_kohya

    out = tmp_path / "r.safetensors"
    resize_lora(files["z_a"], out, rank=2)
    assert inspect_lora(out)["family"] == "zimage" and inspect_lora(out)["rank_alpha"][0] == 2
    assert self_test(out, files["zimage_ckpt"]).ok
    peft = tmp_path / "ai-toolkit.safetensors"
    assert to_diffusers(files["z_a"], peft)["skipped"] == 0
    keys = set(load_file(str(peft)))
    assert "diffusion_model.layers.0.attention.to_k.lora_B.weight" in keys
    assert all(k.startswith("diffusion_model.") for k in keys)
    back = tmp_path / "k.safetensors"
    want = _deltas(files["z_a"])
    assert to_kohya(peft, back) == {"converted": len(want), "skipped": 0}
    got = _deltas(back)
    assert set(got) == set(want) and inspect_lora(back)["family"] == "zimage"
    for name in want:
        assert (got[name] - want[name]).norm() <= 1e-5 * want[name].norm() + 1e-12, name


def test_each_tool_refuses_another_family_by_name(files, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"z_a\.safetensors: Z-Image, sd1\.safetensors: SD1"):
        merge_loras([(files["z_a"], 1.0), (files["sd1"], 1.0)], tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match=r"z_a\.safetensors is a Z-Image LoRA; tiny-sd1\.safetensors is SD1"):
        merge_into_checkpoint(files["sd1_ckpt"], [(files["z_a"], 1.0)], tmp_path / "c.safetensors")
    with pytest.raises(
        ModelError, match=r"flux\.safetensors is a FLUX\.1 LoRA; z_image_tiny\.safetensors is Z-Image"
    ):
        merge_into_checkpoint(files["zimage_ckpt"], [(files["flux"], 1.0)], tmp_path / "c.safetensors")
    wrong = self_test(files["flux"], files["zimage_ckpt"])
    assert not wrong.ok and "trained for FLUX.1 but the base model is Z-Image" in wrong.problems[0]
    assert not (tmp_path / "c.safetensors").exists()


def test_extract_from_a_merged_transformer_gives_back_the_update(files, tiny_zimage, tmp_path: Path) -> None:
    """extract writes the file's names (one fused qkv, not the network's three parts) and the LoRA's update."""
    from lorascripts.toolbox.extract import extract_lora

    tuned = tiny_zimage.transformer.with_name("z_image_tuned.safetensors")  # beside it: its parts are found
    merge_into_checkpoint(files["zimage_ckpt"], [(files["z_a"], 1.0)], tuned)
    out = tmp_path / "e.safetensors"
    try:
        extract_lora(files["zimage_ckpt"], tuned, out, rank=12, tokenizer_path=str(tiny_zimage.tokenizer_dir),
                     dtype=torch.float32)  # fmt: skip
    finally:
        tuned.unlink()
    want, got = _deltas(files["z_a"]), _deltas(out)
    assert set(got) == set(want) and inspect_lora(out)["family"] == "zimage"
    for name in (QKV, "lora_unet_context_refiner_0_feed_forward_w1"):  # the files are bf16: rounding only
        assert (got[name] - want[name]).norm() < 0.05 * want[name].norm(), name
