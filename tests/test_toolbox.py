"""The LoRA toolbox on tiny models: resize, merge (LoRAs and into a checkpoint), extract, convert, inspect and the
self-test against every kind of broken file LORA_FORMAT.md §8–§9 lists."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from comfy_host import REPO
from safetensors.torch import load_file, save_file

from lorascripts.models.loader import load_base_model
from lorascripts.network.from_file import load_lora
from lorascripts.network.lora import LoraNetwork, NetworkSpec
from lorascripts.network.save import save_lora_file
from lorascripts.toolbox.convert import to_diffusers, to_kohya
from lorascripts.toolbox.extract import extract_lora
from lorascripts.toolbox.inspect import inspect_lora
from lorascripts.toolbox.lorafile import group_modules, low_rank, low_rank_of_product
from lorascripts.toolbox.merge import merge_into_checkpoint, merge_loras
from lorascripts.toolbox.resize import resize_lora
from lorascripts.toolbox.selftest import self_test

VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def _base(model):
    return load_base_model(str(model.single_file), tokenizer_path=str(model.tokenizer_dir))


def random_lora(model, path: Path, seed: int, rank: int = 4, alpha: float = 2.0, conv: bool = True) -> Path:
    """A LoRA/LoCon for `model` with random (non-zero) up weights, saved like a trained one."""
    base = _base(model)
    spec = NetworkSpec(
        network_type="locon" if conv else "lora",
        rank=rank,
        alpha=alpha,
        conv_rank=2 if conv else None,
        conv_alpha=1.0 if conv else None,
    )
    network = LoraNetwork.create(base, spec)
    tensors = network.kohya_state_dict(torch.float32)
    g = torch.Generator().manual_seed(seed)
    for key in tensors:
        if key.endswith("lora_up.weight"):
            tensors[key] = torch.randn(tensors[key].shape, generator=g) * 0.05
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_network_args": json.dumps({"conv_dim": "2", "conv_alpha": "1.0"} if conv else {}),
        "ss_base_model_version": VERSION[model.family],
        "ss_v2": str(model.family == "sd2"),
        "ss_output_name": path.stem,
        "ss_tag_frequency": json.dumps({"1_style": {"zkstyle": 6, "red circle": 2}}),
        "modelspec.trigger_phrase": "zkstyle",
    }
    return save_lora_file(path, tensors, meta)


def deltas(path: Path) -> dict[str, torch.Tensor]:
    return {name: m.delta() for name, m in group_modules(load_file(str(path))).items()}


def _unet_out(base, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    unet = base.denoiser
    latents = torch.randn(1, unet.config.in_channels, 16, 16, generator=g)
    ids = base.tokenizers[0](
        "zkstyle, a red circle",
        padding="max_length",
        max_length=base.tokenizers[0].model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        context = base.text_encoders[0](ids)[0]
        return unet(latents, torch.tensor([500]), encoder_hidden_states=context).sample


@pytest.fixture(scope="module")
def sd1_loras(tiny_sd1, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return random_lora(tiny_sd1, folder / "a.safetensors", 1), random_lora(
        tiny_sd1, folder / "b.safetensors", 2
    )


def test_resize_full_rank_is_lossless_and_lower_rank_keeps_the_energy(sd1_loras, tmp_path):
    source = sd1_loras[0]
    full = resize_lora(source, tmp_path / "full.safetensors", rank=4)
    original, lossless = deltas(source), deltas(full.path)  # once: every module's ΔW of each file
    for name, before in original.items():
        after = lossless[name]
        assert torch.allclose(after, before, atol=1e-6, rtol=1e-4), name  # lossless at the original rank
    result = resize_lora(source, tmp_path / "e90.safetensors", energy=0.9)
    resized = deltas(result.path)
    for name, before in original.items():
        kept = float(resized[name].norm() ** 2 / before.norm() ** 2)
        assert kept >= 0.9 - 1e-4 and result.energy[name] >= 0.9 - 1e-6, name
        assert float((before - resized[name]).norm() ** 2 / before.norm() ** 2) <= 0.1 + 1e-4
    assert min(result.ranks.values()) < 4  # something was actually removed
    fixed = resize_lora(source, tmp_path / "r2.safetensors", rank=2)
    assert max(fixed.ranks.values()) == 2
    from safetensors import safe_open

    with safe_open(str(fixed.path), "pt") as fh:
        assert fh.metadata()["ss_network_dim"] == "2" and fh.metadata()["ss_output_name"] == "r2"


@pytest.mark.parametrize("shape", [(96, 40), (24, 8, 3, 3)])
def test_low_rank_from_factors_equals_the_full_svd(shape):
    """Resize/merge reduce Σ upᵢ@downᵢ from the factors (QR + a small SVD): same update, singular values and kept
    energy as the full SVD of ΔW, for Linear and 3×3 conv modules."""
    torch.manual_seed(0)
    fan_in = int(torch.tensor(shape[1:]).prod())
    ups = [torch.randn(shape[0], 3), torch.randn(shape[0], 5) * 0.3]
    downs = [torch.randn(3, fan_in), torch.randn(5, fan_in)]
    delta = (ups[0] @ downs[0] + ups[1] @ downs[1]).reshape(shape)
    for kwargs in ({"rank": 4}, {"energy": 0.97}, {"rank": 8}):
        d_full, u_full, r_full, kept_full = low_rank(delta, **kwargs)
        down, up, rank, kept = low_rank_of_product(ups, downs, shape, **kwargs)
        assert (rank, down.shape, up.shape) == (r_full, d_full.shape, u_full.shape), kwargs
        assert abs(kept - kept_full) < 1e-5, kwargs
        product = (up.flatten(1) @ down.flatten(1)).reshape(shape)
        expected = (u_full.flatten(1) @ d_full.flatten(1)).reshape(shape)
        assert torch.allclose(product, expected, atol=1e-4), kwargs
    assert torch.allclose(product, delta, atol=1e-4)  # rank 8 = the whole update


def test_merge_loras_concatenation_is_exact_and_svd_respects_the_rank(sd1_loras, tmp_path):
    a, b = sd1_loras
    merged = merge_loras([(a, 0.7), (b, -0.5)], tmp_path / "ab.safetensors")
    da, db, dm = deltas(a), deltas(b), deltas(merged)
    for name in da:
        assert torch.allclose(dm[name], 0.7 * da[name] - 0.5 * db[name], atol=1e-6, rtol=1e-4), name
    small = merge_loras([(a, 0.7), (b, -0.5)], tmp_path / "ab4.safetensors", rank=4)
    assert all(m.rank <= 4 for m in group_modules(load_file(str(small))).values())
    info = inspect_lora(merged)
    assert info["rank_alpha"] == "varies" or info["rank_alpha"][0] >= 4
    from safetensors import safe_open

    with safe_open(str(merged), "pt") as fh:
        meta = fh.metadata()
    assert [s["file"] for s in json.loads(meta["ss_merged_from"])] == ["a.safetensors", "b.safetensors"]
    assert json.loads(meta["ss_tag_frequency"])["1_style"]["zkstyle"] == 12  # counts summed


def test_merged_checkpoint_matches_base_plus_runtime_lora(tiny_sd1, sd1_loras, tmp_path):
    """Tolerance: max |Δ| < 1e-4 on the U-Net output (fp32 weights)."""
    merged = tmp_path / "merged.safetensors"
    counts = merge_into_checkpoint(tiny_sd1.single_file, [(sd1_loras[0], 0.8)], merged)
    assert counts["skipped"] == 0 and counts["merged"] == len(group_modules(load_file(str(sd1_loras[0]))))
    base = _base(tiny_sd1)
    network = load_lora(base, sd1_loras[0], multiplier=0.8)
    expected = _unet_out(base)
    network.remove()
    baked = load_base_model(str(merged), tokenizer_path=str(tiny_sd1.tokenizer_dir))
    got = _unet_out(baked)
    assert (got - expected).abs().max() < 1e-4
    assert (got - _unet_out(base)).abs().max() > 1e-3  # and the LoRA did change the output


def test_extract_then_apply_reproduces_the_finetuned_model(tiny_sd1, sd1_loras, tmp_path):
    """Tuned = base + a rank-4 LoCon merged in; extracting at rank 8 must give it back: relative error < 1e-3."""
    tuned = tmp_path / "tuned.safetensors"
    merge_into_checkpoint(tiny_sd1.single_file, [(sd1_loras[1], 1.0)], tuned)
    extracted = tmp_path / "extracted.safetensors"
    counts = extract_lora(
        tiny_sd1.single_file,
        tuned,
        extracted,
        rank=8,
        conv_rank=8,
        tokenizer_path=str(tiny_sd1.tokenizer_dir),
        dtype=torch.float32,
    )
    assert counts["extracted"] == len(group_modules(load_file(str(sd1_loras[1]))))
    base = _base(tiny_sd1)
    original = _unet_out(base)
    network = load_lora(base, extracted)
    rebuilt = _unet_out(base)
    network.remove()
    target = _unet_out(load_base_model(str(tuned), tokenizer_path=str(tiny_sd1.tokenizer_dir)))
    assert float((rebuilt - target).norm() / (target - original).norm()) < 1e-3
    assert self_test(extracted, tiny_sd1.single_file).ok


def test_convert_round_trip_keeps_every_update(tiny_sd1, sd1_loras, tmp_path):
    source = sd1_loras[0]
    peft = tmp_path / "diffusers_format.safetensors"
    to_diffusers(source, peft)
    keys = list(load_file(str(peft)))
    assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in keys)
    assert any(k.startswith("text_encoder.text_model.encoder.layers.0.") for k in keys)
    back = tmp_path / "kohya_again.safetensors"
    counts = to_kohya(peft, back)
    assert counts["skipped"] == 0
    before, after = deltas(source), deltas(back)
    assert set(before) == set(after)
    for name in before:
        assert torch.allclose(after[name], before[name], atol=1e-6, rtol=1e-4), name
    # a PEFT file that keeps its alpha in adapter_config.json: the scale survives conversion
    raw = {k: v for k, v in load_file(str(peft)).items()}
    # stored B = true B · rank / lora_alpha, so that lora_alpha = 2 from adapter_config.json undoes it
    halved = {
        k: (v * raw[k.replace(".lora_B.", ".lora_A.")].shape[0] / 2 if ".lora_B." in k else v)
        for k, v in raw.items()
    }
    (tmp_path / "peft").mkdir()
    save_file(halved, str(tmp_path / "peft" / "adapter_model.safetensors"))
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 2}))
    to_kohya(tmp_path / "peft" / "adapter_model.safetensors", tmp_path / "from_peft.safetensors")
    alpha_kept = deltas(tmp_path / "from_peft.safetensors")
    for name in before:
        assert torch.allclose(alpha_kept[name], before[name], atol=1e-6, rtol=1e-4), name


def test_inspect_reports_what_users_ask(sd1_loras, tmp_path):
    info = inspect_lora(sd1_loras[0])
    assert info["family"] == "sd1" and info["network"] == "locon" and info["text_encoder"] is True
    assert info["trigger_words"] == "zkstyle" and tuple(info["top_tags"][0]) == ("zkstyle", 6)
    assert info["hash"]["stored"] == info["hash"]["computed"]
    assert info["rank_alpha"] == "varies"  # rank 4 for linear layers, 2 for convs
    assert [4, 2.0] in info["rank_alpha_by_block"]["te"]
    out = subprocess.run(
        [sys.executable, "-m", "lorascripts", "lora", "inspect", "--json", str(sd1_loras[0])],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        check=True,
    )
    assert json.loads(out.stdout)["trigger_words"] == "zkstyle"


# --- self-test: each broken kind of file ------------------------------------------------------------------------
def _rewrite(source: Path, target: Path, change) -> Path:  # noqa: ANN001
    from safetensors import safe_open

    with safe_open(str(source), "pt") as fh:
        tensors, meta = {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata())
    tensors, meta = change(tensors, meta)
    save_file(tensors, str(target), metadata=meta)
    return target


def _rename(fn):  # noqa: ANN001, ANN202
    return lambda t, m: ({fn(k): v for k, v in t.items()}, m)


BROKEN = {
    "te_without_text_model": (
        _rename(lambda k: k.replace("lora_te_text_model_", "lora_te_")),
        "dropped (no such layer)",
    ),
    "dots_in_module_name": (
        _rename(lambda k: k.replace("transformer_blocks_0_attn1_to_q", "transformer_blocks.0.attn1.to_q")),
        "unknown tensor types",
    ),
    "peft_keys": (
        _rename(lambda k: k.replace("lora_unet_", "unet.").replace(".lora_down.", ".lora_A.")),
        "diffusers/PEFT format",
    ),
    "nan_tensor": (
        lambda t, m: (
            {
                **t,
                next(k for k in t if k.endswith("lora_up.weight")): torch.full_like(
                    next(v for k, v in t.items() if k.endswith("lora_up.weight")), float("nan")
                ),
            },
            m,
        ),
        "NaN/inf",
    ),
    "stray_tensor": (
        lambda t, m: ({**t, "bundle_emb.zk.string_to_param.*": torch.zeros(2, 8)}, m),
        "not LoRA weights",
    ),
    "groupnorm_target": (
        lambda t, m: (
            {
                **t,
                "lora_unet_down_blocks_0_resnets_0_norm1.lora_down.weight": torch.zeros(2, 8),
                "lora_unet_down_blocks_0_resnets_0_norm1.lora_up.weight": torch.zeros(8, 2),
            },
            m,
        ),
        "dropped (no such layer)",
    ),
    "bad_tag_json": (lambda t, m: (t, {**m, "ss_tag_frequency": "{'zk': 1}"}), "not valid JSON"),
    "wrong_output_name": (lambda t, m: (t, {**m, "ss_output_name": "something_else"}), "WebUI alias differs"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_selftest_flags_each_broken_kind(kind, tiny_sd1, sd1_loras, tmp_path):
    change, expected = BROKEN[kind]
    good = self_test(sd1_loras[0], tiny_sd1.single_file)
    assert good.ok and good.webui.applied == good.webui.total, good.summary()
    broken = _rewrite(sd1_loras[0], tmp_path / f"{kind}.safetensors", change)
    report = self_test(broken, tiny_sd1.single_file)
    assert expected in report.summary(), report.summary()
    if kind not in ("bad_tag_json", "wrong_output_name"):  # warnings only: the file still applies
        assert not report.ok


def test_selftest_flags_header_family_and_incomplete_attention(
    tiny_sd1, tiny_sd2, tiny_sdxl, sd1_loras, tmp_path
):
    lora = sd1_loras[0]
    report = self_test(lora, tiny_sdxl.single_file)  # an SD1 LoRA on an SDXL model
    assert "trained for SD1 but the base model is SDXL" in report.summary() and not report.ok
    raw = lora.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    spaced = struct.pack("<Q", size + 1) + b" " + raw[8 : 8 + size] + raw[8 + size :]
    (tmp_path / "spaced.safetensors").write_bytes(spaced)
    assert 'does not start with {"' in self_test(tmp_path / "spaced.safetensors", "sd1").summary()
    sd2 = random_lora(tiny_sd2, tmp_path / "sd2.safetensors", 3, conv=False)
    partial = _rewrite(
        sd2,
        tmp_path / "sd2_partial.safetensors",
        lambda t, m: ({k: v for k, v in t.items() if not ("lora_te_" in k and "k_proj" in k)}, m),
    )
    report = self_test(partial, tiny_sd2.single_file)
    assert "incomplete q/k/v/out set" in report.summary() and not report.ok
    sdxl = random_lora(tiny_sdxl, tmp_path / "sdxl.safetensors", 4, conv=False)
    assert self_test(sdxl, tiny_sdxl.single_file).ok
    unversioned = _rewrite(
        sdxl,
        tmp_path / "sdxl_nover.safetensors",
        lambda t, m: (t, {k: v for k, v in m.items() if k != "ss_base_model_version"}),
    )
    assert "hides its card" in self_test(unversioned, tiny_sdxl.single_file).summary()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "lorascripts",
            "lora",
            "selftest",
            str(partial),
            "--base",
            str(tiny_sd2.single_file),
        ],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )
    assert cli.returncode == 1 and "NOT fully compatible" in cli.stdout


def test_selftest_against_a_standard_family_without_a_checkpoint(tmp_path):
    """No checkpoint at hand: the standard SD1.5 layout (meta device) is the reference."""
    from lorascripts.toolbox.reference import reference_shapes

    layers = reference_shapes("sd1")
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {
        f"{name}.lora_down.weight": torch.zeros(4, 320),
        f"{name}.lora_up.weight": torch.zeros(320, 4),
        f"{name}.alpha": torch.tensor(4.0),
    }
    save_lora_file(tmp_path / "one.safetensors", tensors, {"ss_output_name": "one"})
    report = self_test(tmp_path / "one.safetensors", "sd1")
    assert (
        report.ok
        and report.webui.applied == 1
        and "diffusion_model_input_blocks_1_1_transformer_blocks_0_attn1_to_q" in layers
    )
    wrong = {k: torch.zeros(4, 768) if "down" in k else v for k, v in tensors.items()}
    save_lora_file(tmp_path / "wrong.safetensors", wrong, {"ss_output_name": "wrong"})
    assert "shape mismatch" in self_test(tmp_path / "wrong.safetensors", "sd1").summary()


def test_diffusers_applies_the_converted_file_like_our_loader(tiny_sd1, sd1_loras, tmp_path):
    """diffusers' own `load_lora_weights` on the converted file gives the U-Net output of our runtime LoRA."""
    from diffusers import StableDiffusionPipeline

    peft = tmp_path / "diffusers_format.safetensors"
    to_diffusers(sd1_loras[0], peft)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd1.diffusers_dir), safety_checker=None)
    pipe.load_lora_weights(str(tmp_path), weight_name=peft.name)
    base = _base(tiny_sd1)
    network = load_lora(base, sd1_loras[0])
    expected = _unet_out(base)
    network.remove()
    mirror = type(base)(**{**base.__dict__, "denoiser": pipe.unet, "text_encoders": [pipe.text_encoder]})
    assert (_unet_out(mirror) - expected).abs().max() < 1e-4
