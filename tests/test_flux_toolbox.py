"""The toolbox on FLUX.1 LoRA files trained by our trainer on the tiny FLUX (2 steps): inspect, self-test against
the all-in-one checkpoint (transformer and CLIP-L), merge of two FLUX LoRAs and into a FLUX checkpoint, resize,
and each tool refusing an SD file given as FLUX and the reverse, by name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_train import make_dataset, tiny_config
from safetensors.torch import load_file
from tiny_flux import build_tiny_flux, transformer_runner

from lorascripts.config import config_from_dict
from lorascripts.errors import ModelError
from lorascripts.network.save import read_lora_weights
from lorascripts.toolbox.inspect import inspect_lora
from lorascripts.toolbox.lorafile import group_modules
from lorascripts.toolbox.merge import merge_into_checkpoint, merge_loras
from lorascripts.toolbox.resize import resize_lora
from lorascripts.toolbox.selftest import self_test
from lorascripts.train.trainer import train

REPO = Path(__file__).resolve().parent.parent
LINEAR1 = "lora_unet_single_blocks_0_linear1"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_tokenizer, tiny_sd1) -> dict[str, Path]:
    """Two FLUX LoRAs and one SD1 LoRA (2 steps each), the FLUX all-in-one checkpoint and the SD1 checkpoint."""
    root = tmp_path_factory.mktemp("flux_toolbox")
    flux = build_tiny_flux(root / "flux", tiny_tokenizer)
    data = make_dataset(root / "data", n=2)
    out = {
        "flux_ckpt": flux.all_in_one,
        "sd1_ckpt": tiny_sd1.single_file,
        "flux_diffusers": flux.diffusers_dir,
    }
    out.update(flux_transformer=flux.transformer, tokenizer=flux.tokenizer_dir)
    for name, model, seed in (("flux_a", flux, 1), ("flux_b", flux, 2), ("sd1", tiny_sd1, 1)):
        cfg = tiny_config(model, data, root / name, max_train_steps=2, seed=seed, output_name=name)
        cfg["learning_rate"] = 1e-2
        if name.startswith("flux"):
            cfg.update(model_family="flux1", text_max_length=32)
        train(config_from_dict(cfg))
        out[name] = root / name / f"{name}.safetensors"
    return out


def _deltas(path: Path) -> dict[str, torch.Tensor]:
    return {name: m.delta() for name, m in group_modules(read_lora_weights(path)[0]).items()}


def test_inspect_and_selftest_name_flux_and_apply_every_module(files, tmp_path: Path) -> None:
    info = inspect_lora(files["flux_a"])
    assert info["family"] == "flux1" and "unet single_blocks_0" in info["rank_alpha_by_block"]
    report = self_test(files["flux_a"], files["flux_ckpt"])  # transformer and CLIP-L in one file
    assert report.ok and report.webui.applied == len(_deltas(files["flux_a"])), report.summary()
    assert report.lora_family == report.base_family == "flux1"
    # a BFL transformer-only file: CLIP-L's layers come from the clip_l file the loader would use
    assert self_test(files["flux_a"], files["flux_transformer"]).ok
    alone = tmp_path / "alone" / files["flux_transformer"].name
    alone.parent.mkdir()
    shutil.copy(files["flux_transformer"], alone)
    lonely = self_test(files["flux_a"], alone)
    assert not lonely.ok and "lora_te1_" in lonely.summary(), lonely.summary()
    wrong = self_test(files["sd1"], files["flux_ckpt"])
    assert not wrong.ok and "trained for SD1 but the base model is FLUX.1" in wrong.problems[0]
    wrong = self_test(files["flux_a"], files["sd1_ckpt"])
    assert not wrong.ok and "trained for FLUX.1 but the base model is SD1" in wrong.problems[0]


def test_flux_files_say_flow_and_samples_use_the_family_guidance(files) -> None:
    from types import SimpleNamespace

    from safetensors import safe_open

    from lorascripts.models.families import get_family
    from lorascripts.train.outputs import sample_settings

    for name, prediction in (("flux_a", "flow"), ("sd1", "epsilon")):
        with safe_open(str(files[name]), "pt") as f:
            assert f.metadata()["modelspec.prediction_type"] == prediction, name
    assert config_from_dict({"base_model": "x", "train_data_dir": "y"}).sample_guidance_scale is None

    def settings(family: str, value: float | None) -> tuple[int, float]:
        cfg = SimpleNamespace(sample_guidance_scale=value, sample_steps=None)
        return sample_settings(
            SimpleNamespace(cfg=cfg, base=SimpleNamespace(family=get_family(family), name="x", extra={}))
        )

    assert [settings("flux1", None), settings("sd1", None), settings("flux1", 2.0)] == [
        (20, 3.5),
        (20, 7.0),
        (20, 2.0),
    ]


def test_merge_of_two_flux_loras_adds_their_updates(files, tmp_path: Path) -> None:
    out = merge_loras([(files["flux_a"], 1.0), (files["flux_b"], 0.5)], tmp_path / "m.safetensors")
    a, b, merged = _deltas(files["flux_a"]), _deltas(files["flux_b"]), _deltas(out)
    assert inspect_lora(out)["family"] == "flux1" and set(merged) == set(a)
    for name in (LINEAR1, "lora_unet_double_blocks_0_txt_attn_qkv"):
        want = a[name] + 0.5 * b[name]
        assert want.norm() > 0 and torch.allclose(
            merged[name], want, atol=1e-6 * want.abs().max().item() + 1e-9
        )
    assert self_test(out, files["flux_ckpt"]).ok


def test_merge_into_the_flux_checkpoint_changes_each_layer_by_its_update(files, tmp_path: Path) -> None:
    out = tmp_path / "merged.safetensors"
    counts = merge_into_checkpoint(files["flux_ckpt"], [(files["flux_a"], 1.0)], out)
    deltas = _deltas(files["flux_a"])
    assert counts == {"merged": len(deltas), "skipped": 0}
    before, after = load_file(str(files["flux_ckpt"])), load_file(str(out))
    assert set(before) == set(after)
    for name, key in (
        (LINEAR1, "model.diffusion_model.single_blocks.0.linear1.weight"),
        (
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
            "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
        ),
    ):
        change = after[key].float() - before[key].float()
        assert deltas[name].norm() > 0 and torch.allclose(change, deltas[name], atol=1e-6), name
    assert torch.equal(
        before["model.diffusion_model.img_in.weight"], after["model.diffusion_model.img_in.weight"]
    )


def test_extract_from_a_merged_flux_checkpoint_gives_back_the_update(files, tmp_path: Path) -> None:
    """extract writes the file's names (one fused linear1, not the network's two parts) and the LoRA's update."""
    from lorascripts.toolbox.extract import extract_lora

    tuned = files["flux_ckpt"].with_name(
        "tuned.safetensors"
    )  # beside the all-in-one: its t5_tokenizer folder
    merge_into_checkpoint(files["flux_ckpt"], [(files["flux_a"], 1.0)], tuned)
    out = tmp_path / "e.safetensors"
    extract_lora(
        files["flux_ckpt"], tuned, out, rank=8, tokenizer_path=str(files["tokenizer"]), dtype=torch.float32
    )
    want, got = _deltas(files["flux_a"]), _deltas(out)
    assert set(got) == set(want)
    for name in (LINEAR1, "lora_unet_double_blocks_0_img_mlp_0"):
        assert (got[name] - want[name]).norm() < 1e-3 * want[name].norm(), name
    with pytest.raises(ModelError, match=r"tuned\.safetensors is FLUX\.1, tiny-sd1\.safetensors is SD1"):
        extract_lora(
            files["sd1_ckpt"], tuned, tmp_path / "x.safetensors", tokenizer_path=str(files["tokenizer"])
        )


def test_resize_keeps_a_flux_file(files, tmp_path: Path) -> None:
    out = tmp_path / "r.safetensors"
    resize_lora(files["flux_a"], out, rank=2)
    info = inspect_lora(out)
    assert info["family"] == "flux1" and info["rank_alpha"][0] == 2
    assert self_test(out, files["flux_ckpt"]).ok


def test_convert_writes_the_names_diffusers_loads_with_our_update(files, tmp_path: Path) -> None:
    """kohya -> diffusers (`transformer.…`, q/k/v and linear1 unfused): FluxPipeline.load_lora_weights changes
    diffusers' transformer as our engine's LoRA changes ours; converting back gives the same updates."""
    from diffusers import FluxPipeline

    from lorascripts.models import load_base_model
    from lorascripts.network.from_file import load_lora
    from lorascripts.toolbox.convert import to_diffusers, to_kohya

    out = tmp_path / "d.safetensors"
    assert to_diffusers(files["flux_a"], out)["skipped"] == 0
    keys = set(load_file(str(out)))
    assert all(k.startswith(("transformer.", "text_encoder.")) for k in keys)
    assert {
        f"transformer.single_transformer_blocks.0.{p}.lora_B.weight" for p in ("attn.to_q", "proj_mlp")
    } <= keys
    run = transformer_runner()
    base = load_base_model(str(files["flux_transformer"]), tokenizer_path=str(files["tokenizer"]))
    before = run(base.denoiser)
    load_lora(base, files["flux_a"])
    mine = run(base.denoiser)
    pipe = FluxPipeline.from_pretrained(str(files["flux_diffusers"]))
    assert torch.allclose(run(pipe.transformer), before, atol=1e-4)
    pipe.load_lora_weights(str(out))
    change = (mine - before).norm()
    assert change > 1e-3 * before.norm()
    diff = (run(pipe.transformer) - mine).norm()
    assert diff < 0.02 * change, f"diffusers differs by {diff / change:.3f}"
    back = tmp_path / "k.safetensors"  # and back: q/k/v and linear1 fused again, every update kept
    assert to_kohya(out, back) == {"converted": len(_deltas(files["flux_a"])), "skipped": 0}
    want, got = _deltas(files["flux_a"]), _deltas(back)
    assert set(got) == set(want) and inspect_lora(back)["family"] == "flux1"
    for name in want:
        assert (got[name] - want[name]).norm() <= 1e-5 * want[name].norm() + 1e-12, name


def test_each_tool_refuses_the_other_family_by_name(files, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"flux_a\.safetensors: FLUX\.1, sd1\.safetensors: SD1"):
        merge_loras([(files["flux_a"], 1.0), (files["sd1"], 1.0)], tmp_path / "m.safetensors")
    with pytest.raises(
        ModelError, match=r"flux_a\.safetensors is a FLUX\.1 LoRA; tiny-sd1\.safetensors is SD1"
    ):
        merge_into_checkpoint(files["sd1_ckpt"], [(files["flux_a"], 1.0)], tmp_path / "c.safetensors")
    with pytest.raises(
        ModelError, match=r"sd1\.safetensors is a SD1 LoRA; flux1-tiny-aio\.safetensors is FLUX\.1"
    ):
        merge_into_checkpoint(files["flux_ckpt"], [(files["sd1"], 1.0)], tmp_path / "c.safetensors")
    cli = subprocess.run(
        [sys.executable, "-m", "lorascripts", "lora", "merge", str(files["sd1"]), "--checkpoint"]
        + [str(files["flux_ckpt"]), "-o", str(tmp_path / "c.safetensors")],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )
    assert cli.returncode != 0 and "is a SD1 LoRA" in cli.stdout + cli.stderr
    assert not (tmp_path / "c.safetensors").exists()
