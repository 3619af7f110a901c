"""What a LoRA file's metadata and the toolbox say must be true (kohya sd-scripts' semantics): fields read from a
real tiny run, and the findings of `lora inspect` / `lora selftest` on files written the way kohya writes them
(its key grammar, shapes and metadata), built here."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from comfy_host import REPO
from helpers_train import make_dataset, tiny_config
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lorascripts.config import config_from_dict
from lorascripts.errors import ModelError
from lorascripts.toolbox.inspect import format_inspection, inspect_lora
from lorascripts.toolbox.selftest import self_test
from lorascripts.train.outputs import base_model_hashes
from lorascripts.train.trainer import train


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata())


@pytest.fixture(scope="module")
def steps_bound_run(tiny_sd1, tmp_path_factory):
    """6 images in batches of 2 (3 steps an epoch), bounded by max_train_steps=4 while `epochs` keeps its
    default of 10; U-Net only, bucketing off, a step-2 save."""
    root = tmp_path_factory.mktemp("steps_bound")
    overrides = dict(
        max_train_steps=4,
        save_steps=2,
        enable_bucket=False,
        train_text_encoder=False,
        optimizer_args={"eps": 1e-7},
    )
    cfg = config_from_dict(tiny_config(tiny_sd1, make_dataset(root / "data"), root / "out", **overrides))
    return tiny_sd1, cfg, train(cfg)


def test_epochs_are_those_the_run_spanned_and_one_based(steps_bound_run) -> None:
    _, cfg, result = steps_bound_run
    assert cfg.epochs == 10 and cfg.max_train_steps == 4
    final = _metadata(result.lora_path)
    # 4 steps of 3 per epoch: the run reached epoch 2 of 2 (kohya: ceil(4 / 3)), not the config's 10
    assert (final["ss_steps"], final["ss_epoch"], final["ss_num_epochs"]) == ("4", "2", "2")
    assert final["ss_num_batches_per_epoch"] == "3" and final["ss_max_train_steps"] == "4"
    early = _metadata(result.output_dir / "tiny-step00000002.safetensors")
    assert (early["ss_steps"], early["ss_epoch"], early["ss_num_epochs"]) == ("2", "1", "2")


def test_untrained_text_encoder_and_bucketing_off_read_as_kohya_writes_them(steps_bound_run) -> None:
    _, cfg, result = steps_bound_run
    assert not any(k.startswith("lora_te") for k in load_file(str(result.lora_path)))
    meta = _metadata(result.lora_path)
    assert meta["ss_text_encoder_lr"] == "None" and meta["ss_unet_lr"] == str(cfg.learning_rate)
    assert meta["ss_enable_bucket"] == "False" and meta["ss_bucket_no_upscale"] == "False"
    assert meta["ss_min_bucket_reso"] == "None" and meta["ss_max_bucket_reso"] == "None"
    assert meta["ss_bucket_info"] == "null"


def test_optimizer_is_its_class_path_with_its_arguments(steps_bound_run) -> None:
    _, _, result = steps_bound_run
    assert (
        _metadata(result.lora_path)["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01,eps=1e-07)"
    )


def test_base_model_hashes_are_kohyas(steps_bound_run, tiny_sd1) -> None:
    model, _, result = steps_bound_run
    data = model.single_file.read_bytes()
    assert len(data) > 0x110000  # the old hash reads the 64 KiB at 1 MiB: the file must reach that far
    meta = _metadata(result.lora_path)
    assert meta["ss_sd_model_hash"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(data).hexdigest()
    assert meta["ss_sd_model_name"] == model.single_file.name
    assert base_model_hashes(tiny_sd1.diffusers_dir) == {}  # a folder has no single-file identity


def test_our_plain_lora_is_inspected_as_lora_and_passes_the_selftest(steps_bound_run) -> None:
    model, _, result = steps_bound_run
    tensors = load_file(str(result.lora_path))
    # SD1's proj_in/proj_out are 1x1 convolutions: a plain LoRA adapts them, and that does not make it a LoCon
    assert any(t.dim() == 4 for k, t in tensors.items() if "proj_in.lora_down" in k)
    info = inspect_lora(result.lora_path)
    assert (info["family"], info["network"]) == ("sd1", "lora")
    report = self_test(result.lora_path, model.single_file)
    assert report.ok and report.warnings == [], report.summary()


# --- files as kohya sd-scripts writes them ----------------------------------------------------------------------
SD15 = {  # kohya name -> (down shape, up shape) of real SD1.5 layers
    "lora_unet_down_blocks_0_attentions_0_proj_in": ((4, 320, 1, 1), (320, 4, 1, 1)),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": ((4, 320), (320, 4)),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": ((4, 768), (768, 4)),
}
SD15_CONV3X3 = {"lora_unet_down_blocks_0_resnets_0_conv1": ((4, 320, 3, 3), (320, 4, 1, 1))}
FLUX = {  # networks/lora_flux.py names with FLUX.1-dev widths (3072 hidden, CLIP-L 768)
    "lora_unet_double_blocks_0_img_attn_qkv": ((4, 3072), (9216, 4)),
    "lora_unet_double_blocks_18_txt_mlp_0": ((4, 3072), (12288, 4)),
    "lora_unet_single_blocks_37_linear1": ((4, 3072), (21504, 4)),
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": ((4, 768), (768, 4)),
}
KOHYA_SD1_META = {  # train_network.py's values for an SD1.5 run with bucketing off and no text-encoder LR
    "ss_network_module": "networks.lora",
    "ss_network_dim": "4",
    "ss_network_alpha": "1.0",
    "ss_base_model_version": "sd_v1",
    "ss_v2": "False",
    "ss_enable_bucket": "False",
    "ss_min_bucket_reso": "None",
    "ss_max_bucket_reso": "None",
    "ss_bucket_info": "null",
    "ss_text_encoder_lr": "None",
    "ss_optimizer": "torch.optim.adamw.AdamW",
    "ss_tag_frequency": json.dumps({"10_zk": {"zkstyle": 6}}),
    "ss_dataset_dirs": json.dumps({"10_zk": {"n_repeats": 10, "img_count": 6}}),
    "modelspec.architecture": "stable-diffusion-v1/lora",
}


def kohya_file(path: Path, modules: dict, metadata: dict[str, str]) -> Path:
    """A LoRA saved as kohya's LoRANetwork.save_weights does: `<name>.lora_down/up.weight` + scalar alpha."""
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (down, up) in modules.items():
        tensors[f"{name}.lora_down.weight"] = (torch.randn(down, generator=g) * 0.01).to(torch.bfloat16)
        tensors[f"{name}.lora_up.weight"] = (torch.randn(up, generator=g) * 0.01).to(torch.bfloat16)
        tensors[f"{name}.alpha"] = torch.tensor(1.0).to(torch.bfloat16)
    save_file(tensors, str(path), metadata={**metadata, "ss_output_name": path.stem})
    return path


def test_kohya_plain_lora_is_lora_and_locon_needs_3x3_convolutions(tmp_path: Path) -> None:
    plain = kohya_file(tmp_path / "plain.safetensors", SD15, KOHYA_SD1_META)
    assert (inspect_lora(plain)["family"], inspect_lora(plain)["network"]) == ("sd1", "lora")
    locon_meta = {**KOHYA_SD1_META, "ss_network_args": json.dumps({"conv_dim": "4", "conv_alpha": "1"})}
    locon = kohya_file(tmp_path / "locon.safetensors", {**SD15, **SD15_CONV3X3}, locon_meta)
    assert inspect_lora(locon)["network"] == "locon"


def test_selftest_takes_kohyas_null_bucket_info_and_still_flags_broken_json(tmp_path: Path) -> None:
    plain = kohya_file(tmp_path / "plain.safetensors", SD15, KOHYA_SD1_META)
    report = self_test(plain)  # its own family (sd1): the standard SD1.5 layout
    assert report.ok and report.webui.applied == len(SD15) and report.warnings == [], report.summary()
    broken = kohya_file(
        tmp_path / "broken.safetensors", SD15, {**KOHYA_SD1_META, "ss_bucket_info": "{'0': 1}"}
    )
    assert "ss_bucket_info is not valid JSON" in self_test(broken).summary()


def test_flux_lora_is_named_flux1_and_checked_against_flux1_not_sd(tmp_path: Path) -> None:
    meta = {"ss_network_module": "networks.lora_flux", "ss_base_model_version": "flux1"}
    flux = kohya_file(
        tmp_path / "flux.safetensors", FLUX, {**meta, "modelspec.architecture": "flux-1-dev/lora"}
    )
    info = inspect_lora(flux)
    assert info["family"] == "flux1" and "family         flux1" in format_inspection(info)
    assert "unet double_blocks_0" in info["rank_alpha_by_block"]
    # the key grammar alone names it (no metadata), and outweighs metadata that says SD1
    bare = kohya_file(tmp_path / "bare.safetensors", FLUX, {})
    mislabelled = kohya_file(tmp_path / "mislabelled.safetensors", FLUX, {"ss_base_model_version": "sd_v1"})
    assert inspect_lora(bare)["family"] == inspect_lora(mislabelled)["family"] == "flux1"
    # double/single blocks beyond FLUX.1's 19/38 (HunyuanImage 2.1 has 20/40) and no metadata: unknown
    beyond = {"lora_unet_single_blocks_39_linear1": ((4, 64), (64, 4))}
    assert inspect_lora(kohya_file(tmp_path / "dit.safetensors", beyond, {}))["family"] == "unknown"
    # FLUX.1 is a family on the seam: checked against FLUX.1-dev's layers (BFL names, fused qkv and linear1)
    report = self_test(flux)
    assert report.ok and report.webui.applied == len(FLUX), report.summary()
    against_sd1 = self_test(flux, "sd1")
    assert not against_sd1.ok and "trained for FLUX.1 but the base model is SD1" in against_sd1.problems[0]
    cli = subprocess.run(
        [sys.executable, "-m", "lorascripts", "lora", "selftest", str(flux)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )
    assert cli.returncode == 0, cli.stderr


def test_files_whose_keys_and_metadata_prove_nothing_are_unknown_not_sd1(tmp_path: Path) -> None:
    odd = {"lora_unet_blocks_0_attn_qkv": ((4, 64), (192, 4))}  # e.g. a Wan-style DiT, no metadata
    path = kohya_file(tmp_path / "odd.safetensors", odd, {})
    assert inspect_lora(path)["family"] == "unknown"
    with pytest.raises(ModelError, match="family is unknown .*Pass --base flux1\\|sd1\\|sd2\\|sdxl\\|zimage"):
        self_test(path)
    # Lumina 2 shares Z-Image's block names: kohya's `lumina2` metadata names it, the names alone read as Z-Image
    lumina = {"lora_unet_layers_0_attention_qkv": ((4, 64), (192, 4))}
    named = kohya_file(tmp_path / "lumina.safetensors", lumina, {"ss_base_model_version": "lumina2"})
    assert inspect_lora(named)["family"] == "lumina2"
    assert inspect_lora(kohya_file(tmp_path / "bare.safetensors", lumina, {}))["family"] == "zimage"
