"""FLUX.1 on the family seam: the files people have (BFL transformer + ae/clip_l/t5 in ComfyUI's folders, the
all-in-one checkpoint, a diffusers folder) loaded through `load_base_model`, a CLI-config training run whose
loss falls and whose file holds only kohya FLUX keys, the fused-layer file layout, and bad inputs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers_train import largest_difference, make_dataset, tiny_config, train_stopped_and_resumed
from safetensors.torch import load_file
from tiny_flux import bfl_transformer, build_tiny_flux, transformer_runner

from lorascripts.config import config_from_dict
from lorascripts.errors import ModelError
from lorascripts.models import load_base_model
from lorascripts.models.families import get_family
from lorascripts.models.families.flux1 import lora_layout
from lorascripts.run.events import read_events
from lorascripts.train.trainer import train

KOHYA_FLUX_KEY = (
    r"^lora_(unet_(double_blocks_\d+_(img|txt)_(attn_qkv|attn_proj|mlp_0|mlp_2|mod_lin)"
    r"|single_blocks_\d+_(linear1|linear2|modulation_lin))|te1_text_model_[a-z0-9_]+)"
    r"\.(lora_down\.weight|lora_up\.weight|alpha)$"
)


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory, tiny_tokenizer):
    return build_tiny_flux(tmp_path_factory.mktemp("flux"), tiny_tokenizer)


def _output(base, seed: int = 0) -> torch.Tensor:
    family = base.family
    gen = torch.Generator().manual_seed(seed)
    ids = family.tokenize(base, ["a red circle on a blue picture"])
    with torch.no_grad():
        cond = family.encode_tokens(base, ids, clip_skip=1)
        noisy = torch.randn(1, 16, 4, 4, generator=gen)
        return family.predict(base, noisy, torch.tensor([0.4]), cond)


def test_every_form_loads_to_the_same_model(tiny_flux) -> None:
    """BFL transformer (its parts found in ComfyUI's folders), all-in-one checkpoint, diffusers folder."""
    tok = str(tiny_flux.tokenizer_dir)
    bases = [
        load_base_model(str(tiny_flux.transformer), tokenizer_path=tok),
        load_base_model(str(tiny_flux.all_in_one), tokenizer_path=tok, expected_family="flux1"),
        load_base_model(str(tiny_flux.diffusers_dir)),
    ]
    reference = _output(bases[0])
    for base in bases:
        assert base.family.name == "flux1" and base.prediction_type == "flow"
        assert base.denoiser.config.guidance_embeds  # dev: guidance embedding present
        assert base.family.latent_scale_shift(base.vae) == pytest.approx((0.3611, 0.1159))
        assert base.family.bucket_unit(base) == 4  # 2x VAE (two levels) x 2x2 packing; FLUX.1's VAE: 16
        assert hasattr(base.denoiser.transformer_blocks[0].attn, "to_qkv")  # fused as BFL's qkv
        assert torch.allclose(_output(base), reference, atol=1e-5)
    assert reference.shape == (1, 16, 4, 4) and reference.abs().mean() > 0.1
    ids = bases[0].family.tokenize(bases[0], ["a"])
    assert [tuple(i.shape) for i in ids] == [(1, 77), (1, 512)]  # dev: 512 T5 tokens by default


def test_schnell_is_detected_and_named(tiny_flux, tmp_path: Path) -> None:
    folder = tiny_flux.transformer.parent
    schnell = folder / "flux1-tiny-schnell.safetensors"
    from safetensors.torch import save_file

    save_file(bfl_transformer(5, guidance=False), str(schnell))
    try:
        base = load_base_model(str(schnell), tokenizer_path=str(tiny_flux.tokenizer_dir))
    finally:
        schnell.unlink()
    family = base.family
    assert not base.denoiser.config.guidance_embeds
    assert family.model_metadata(base) == {"modelspec.architecture": "flux-1-schnell/lora"}
    assert base.noise_scheduler.config.shift == 1.0 and not base.noise_scheduler.config.use_dynamic_shifting
    assert family.tokenize(base, ["a"])[1].shape == (1, 256)


def test_linear1_file_layout_is_the_same_update(tiny_flux) -> None:
    """The single blocks' q/k/v and MLP parts written as kohya's one linear1 module (and read back) change the
    layer by exactly the same matrix."""
    rows = {"qkv": 6, "mlp": 8}
    gen = torch.Generator().manual_seed(1)
    name = "lora_unet_single_blocks_0_linear1"
    net = {}
    for part, rank, alpha in (("qkv", 4, 2.0), ("mlp", 3, 3.0)):
        net[f"{name}__{part}.lora_down.weight"] = torch.randn(rank, 5, generator=gen)
        net[f"{name}__{part}.lora_up.weight"] = torch.randn(rows[part], rank, generator=gen)
        net[f"{name}__{part}.alpha"] = torch.tensor(alpha)

    def delta(t: dict, base: str) -> torch.Tensor:
        down, up = t[f"{base}.lora_down.weight"], t[f"{base}.lora_up.weight"]
        return up @ down * (float(t[f"{base}.alpha"]) / down.shape[0])

    fused = lora_layout.to_file(net, rows)
    assert set(fused) == {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"}
    assert fused[f"{name}.lora_down.weight"].shape == (7, 5)
    expected = torch.cat([delta(net, f"{name}__qkv"), delta(net, f"{name}__mlp")])
    assert torch.allclose(delta(fused, name), expected, atol=1e-5)
    back = lora_layout.from_file(fused, rows)
    again = torch.cat([delta(back, f"{name}__qkv"), delta(back, f"{name}__mlp")])
    assert torch.allclose(again, expected, atol=1e-5)
    # our block-diagonal file gives each part back its own rank (incremental training does not grow linear1)
    assert [back[f"{name}__{p}.lora_down.weight"].shape[0] for p in ("qkv", "mlp")] == [4, 3]
    kohya = {  # kohya's own layout: every rank column shared by q, k, v and the MLP rows
        f"{name}.lora_down.weight": torch.randn(2, 5, generator=gen),
        f"{name}.lora_up.weight": torch.randn(14, 2, generator=gen),
        f"{name}.alpha": torch.tensor(1.0),
    }
    split = lora_layout.from_file(kohya, rows)
    assert split[f"{name}__mlp.lora_down.weight"].shape[0] == 2
    joined = torch.cat([delta(split, f"{name}__qkv"), delta(split, f"{name}__mlp")])
    assert torch.allclose(joined, delta(kohya, name), atol=1e-5)
    only_qkv = lora_layout.to_file({k: v for k, v in net.items() if "__qkv" in k}, rows)
    assert torch.allclose(delta(only_qkv, name)[6:], torch.zeros(8, 5))


@pytest.fixture(scope="module")
def trained(tiny_flux, tmp_path_factory):
    root = tmp_path_factory.mktemp("flux_train")
    data = make_dataset(root / "data", n=5)
    cfg = tiny_config(
        tiny_flux,
        data,
        root / "out",
        base_model=str(tiny_flux.transformer),
        model_family="flux1",
        max_train_steps=40,
        learning_rate=5e-3,
        batch_size=4,
        text_max_length=32,
        timestep_sampling="sigmoid",
        validation_split=1,
        validate_every_n_steps=20,
    )
    train(config_from_dict(cfg))
    return root / "out"


def test_training_run_loss_falls_and_file_is_kohya_flux(trained, tiny_flux) -> None:
    losses = [e["loss"] for e in read_events(trained / "events.jsonl") if e["event"] == "step"]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first * 0.9, f"loss did not fall: first {first:.4f}, last {last:.4f}"
    from safetensors import safe_open

    path = trained / "tiny.safetensors"
    tensors = load_file(str(path))
    bad = [k for k in tensors if not re.match(KOHYA_FLUX_KEY, k)]
    assert not bad, f"not kohya FLUX keys: {bad[:5]}"
    modules = {k.split(".")[0] for k in tensors}
    assert all(f"{m}.alpha" in tensors for m in modules)
    assert (
        "lora_unet_double_blocks_0_img_attn_qkv" in modules and "lora_unet_single_blocks_0_linear1" in modules
    )
    assert any(m.startswith("lora_te1_") for m in modules)
    assert not any("mod_lin" in m or "modulation" in m for m in modules)  # kohya's default leaves them out
    assert tensors["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (7 * 64, 8)  # rank 4 + 4
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_base_model_version"] == "flux1"
    assert meta["modelspec.architecture"] == "flux-1-dev/lora"
    events = [e for e in read_events(trained / "events.jsonl") if e["event"] == "self_test"]
    assert events and events[-1]["ok"], events
    validation = [e["loss"] for e in read_events(trained / "events.jsonl") if e["event"] == "validation"]
    assert len(validation) >= 2 and all(0 < v < 10 for v in validation)  # fixed sigmas 1/8 .. 7/8


def test_saved_file_reproduces_the_trained_network(trained, tiny_flux) -> None:
    """Loading our file back (linear1 split again) changes the model as the file's fused modules say."""
    from lorascripts.network.from_file import load_lora

    base = load_base_model(str(tiny_flux.transformer), tokenizer_path=str(tiny_flux.tokenizer_dir))
    before = _output(base)
    network = load_lora(base, trained / "tiny.safetensors")
    after = _output(base)
    network.set_multiplier(0.0)
    assert torch.allclose(_output(base), before, atol=1e-6)
    assert (after - before).abs().max() > 1e-3
    layer = base.denoiser.single_transformer_blocks[0]
    fused = load_file(str(trained / "tiny.safetensors"))
    name = "lora_unet_single_blocks_0_linear1"
    down, up = fused[f"{name}.lora_down.weight"], fused[f"{name}.lora_up.weight"]
    file_delta = up @ down * (float(fused[f"{name}.alpha"]) / down.shape[0])
    ours = [network.lora_modules[f"{name}__{p}"] for p in ("qkv", "mlp")]
    net_delta = torch.cat([m.get_diff_weight(multiplier=1)[0].detach() for m in ours])
    assert torch.allclose(net_delta.reshape(file_delta.shape), file_delta, atol=1e-5)
    assert layer.attn.to_qkv.weight.shape[0] + layer.proj_mlp.weight.shape[0] == file_delta.shape[0]


def test_bad_inputs_name_the_file(tiny_flux, tiny_sd1, tmp_path: Path) -> None:
    with pytest.raises(
        ModelError, match=r"tiny-sd1\.safetensors is a SD1\.x model, but model_family is flux1"
    ):
        load_base_model(
            str(tiny_sd1.single_file), tokenizer_path=str(tiny_sd1.tokenizer_dir), expected_family="flux1"
        )
    alone = tmp_path / "flux1-alone.safetensors"
    shutil.copy(tiny_flux.transformer, alone)
    with pytest.raises(
        ModelError, match=r"flux1-alone\.safetensors holds only the FLUX transformer; its VAE"
    ):
        load_base_model(str(alone), tokenizer_path=str(tiny_flux.tokenizer_dir))
    models = tiny_flux.transformer.parent.parent
    shutil.copy(models / "vae" / "ae.safetensors", tmp_path / "ae.safetensors")
    shutil.copy(models / "text_encoders" / "clip_l.safetensors", tmp_path / "clip_l.safetensors")
    with pytest.raises(
        ModelError, match=r"flux1-alone\.safetensors .*its T5-XXL \(t5xxl_fp16\.safetensors\) was not found"
    ):
        load_base_model(str(alone), tokenizer_path=str(tiny_flux.tokenizer_dir))
    with pytest.raises(ModelError, match=r"clip_l\.safetensors is not a T5"):
        load_base_model(
            str(alone),
            tokenizer_path=str(tiny_flux.tokenizer_dir),
            components={"text_encoder_2": str(tmp_path / "clip_l.safetensors")},
        )
    # a part file the family does not take is refused, not ignored
    with pytest.raises(ModelError, match=r"tiny-sd1\.safetensors is a SD1\.x model, which takes no separate"):
        load_base_model(
            str(tiny_sd1.single_file),
            tokenizer_path=str(tiny_sd1.tokenizer_dir),
            components={"vae": str(tmp_path / "ae.safetensors")},
        )
    # a CLIP tokenizer of another model (more tokens than CLIP-L's embedding rows): named at load, not mid-step
    other = shutil.copytree(tiny_flux.tokenizer_dir, tmp_path / "other_tokenizer")
    vocab = json.loads((other / "vocab.json").read_text(encoding="utf-8"))
    vocab.update({f"zzextra{i}</w>": len(vocab) + i for i in range(5)})
    (other / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(
        ModelError,
        match=r"has \d+ tokens but text encoder 1 of flux1-tiny\.safetensors has \d+ embedding rows",
    ):
        load_base_model(str(tiny_flux.transformer), tokenizer_path=str(tmp_path / "other_tokenizer"))


def test_family_is_registered_with_its_config_choices() -> None:
    from lorascripts.config.schema import TrainConfig

    family = get_family("flux1")
    assert family.made_for("flux1") and not family.made_for("sdxl_base_v1-0")
    from lorascripts.models.families import family_names

    assert "flux1" in TrainConfig.__dataclass_fields__["model_family"].metadata["choices"]
    assert "flux1" in family_names()


def _flux_width_transformer() -> torch.nn.Module:
    """A transformer of FLUX.1's own width (24 heads of 128) with 1 double + 1 single block, random bf16 weights:
    diffusers' kohya converter splits linear1 at FLUX's fixed sizes, so a narrower model cannot be used."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(
            num_layers=1,
            num_single_layers=1,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
        )
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            fan_in = param.shape[-1] if param.dim() > 1 else 1
            param.copy_(torch.randn(param.shape, generator=gen) * fan_in**-0.5 if param.dim() > 1 else 1.0)
    return model.eval()


def test_diffusers_load_lora_weights_reproduces_our_output(tmp_path: Path) -> None:
    """diffusers' FluxPipeline.load_lora_weights reads our kohya file (fused qkv and linear1) and changes its
    transformer as our LoRA changes ours."""
    import copy

    from diffusers import FluxPipeline
    from safetensors.torch import save_file

    from lorascripts.models.families import BaseModel
    from lorascripts.models.families.flux1.load import fuse_projections
    from lorascripts.network.lora import LoraNetwork, NetworkSpec

    theirs = _flux_width_transformer()
    ours = fuse_projections(copy.deepcopy(theirs))
    family = get_family("flux1")
    base = BaseModel(family, ours, None, [], [], None, "flow", "", "flux-width", 1024)
    network = LoraNetwork.create(base, NetworkSpec(rank=4, alpha=2.0, train_text_encoder=False))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in network.lora_modules.values():
            module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape, generator=gen) * 0.3)
    network.to(torch.bfloat16)
    tensors = family.lora_file_tensors(base, network.kohya_state_dict())
    path = tmp_path / "flux-width.safetensors"
    save_file(tensors, str(path))
    run = transformer_runner()
    before = run(theirs)
    network.apply()
    mine = run(ours)
    pipe = FluxPipeline(None, None, None, None, None, None, theirs)
    pipe.load_lora_weights(str(path))
    after = run(theirs)
    change = (mine - before).norm()
    assert change > 0.05 * before.norm()
    assert (after - mine).norm() < 0.05 * change, f"diffusers differs by {(after - mine).norm() / change:.3f}"


def test_estimate_reads_flux_headers_and_counts_a_step(tiny_flux, trained) -> None:
    from lorascripts.perf.configs import model_shapes
    from lorascripts.perf.flops import train_step_cost

    base = load_base_model(str(tiny_flux.all_in_one), tokenizer_path=str(tiny_flux.tokenizer_dir))
    shapes = model_shapes(str(tiny_flux.all_in_one))
    assert shapes.family.name == "flux1"
    assert shapes.params["unet"] == sum(p.numel() for p in base.denoiser.parameters())
    assert shapes.params["vae"] == sum(p.numel() for p in base.vae.parameters())
    assert shapes.text_encoders[1]["d_model"] == base.text_encoders[1].config.d_model
    alone = model_shapes(str(tiny_flux.transformer))  # parts not in the file: the part files the load reads
    assert alone.params == shapes.params and alone.text_encoders == shapes.text_encoders and not alone.assumed
    costs = [
        train_step_cost(shapes.family, shapes.denoiser, batch=1, height=px, width=px, text_len=32, rank=4)
        for px in (32, 64)
    ]
    assert 0 < costs[0].flops < costs[1].flops
    estimate = next(e for e in read_events(trained / "events.jsonl") if e["event"] == "estimate")
    assert estimate["flops_per_step"] > 0 and estimate["peak_memory_bytes"] > 0


def test_cached_text_and_preview_samples_through_fluxpipeline(tiny_flux, tmp_path: Path) -> None:
    """T5 + CLIP outputs cached on disk (text encoders frozen), preview samples drawn by diffusers' FluxPipeline,
    and a second run in another folder reuses the caches; with gradient checkpointing (the GPU setting)."""
    data = make_dataset(tmp_path / "data", n=2)
    common = dict(
        base_model=str(tiny_flux.transformer),
        max_train_steps=2,
        batch_size=2,
        train_text_encoder=False,
        cache_text_encoder_outputs="disk",
        cache_dir=str(tmp_path / "cache"),
        text_max_length=16,
        sample_prompts=["zkstyle a red circle"],
        sample_every_n_steps=2,
        sample_steps=2,
        gradient_checkpointing=True,
    )
    train(config_from_dict(tiny_config(tiny_flux, data, tmp_path / "a", **common)))
    losses = [e["loss"] for e in read_events(tmp_path / "a" / "events.jsonl") if e["event"] == "step"]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    samples = sorted((tmp_path / "a" / "samples").glob("*.png"))
    assert samples, "no preview sample was drawn"
    from PIL import Image

    assert Image.open(samples[0]).size == (32, 32)
    tensors = load_file(str(tmp_path / "a" / "tiny.safetensors"))
    assert not any(k.startswith("lora_te") for k in tensors)
    cached = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert cached, "no text/latent cache on disk"
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    train(config_from_dict(tiny_config(tiny_flux, data, tmp_path / "b", **common)))
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # reused, not rewritten


def test_incremental_training_from_our_flux_file_keeps_its_ranks(trained, tiny_flux, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    start = trained / "tiny.safetensors"
    cfg = tiny_config(
        tiny_flux, data, tmp_path / "out", max_train_steps=1, initial_lora=str(start), text_max_length=16
    )
    train(config_from_dict(cfg))
    before, after = load_file(str(start)), load_file(str(tmp_path / "out" / "tiny.safetensors"))
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained on from there


def test_stop_and_resume_ends_with_the_uninterrupted_weights(tiny_flux, tmp_path: Path) -> None:
    """Sigmas and noise are drawn from the step's seed: a stopped and resumed run ends where one run ends."""
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_flux, data, tmp_path / "ref", max_train_steps=4, text_max_length=16, dropout=0.1)
    ref = train(config_from_dict(cfg))
    resumed = train_stopped_and_resumed(cfg, tmp_path / "cut", 2)
    worst = largest_difference(ref.lora_path, resumed.lora_path)
    assert worst < 1e-6, f"resumed weights differ from an uninterrupted run by {worst}"


def test_fp8_transformer_and_t5_files_load_in_the_run_dtype(tiny_flux, tmp_path: Path) -> None:
    """ComfyUI's `flux1-dev-fp8` / `t5xxl_fp8_e4m3fn` files: weights stored fp8 are computed in the run's dtype."""
    from safetensors.torch import save_file

    models = tiny_flux.transformer.parent.parent
    fp8 = {
        k: v.to(torch.float8_e4m3fn) if v.dim() == 2 else v
        for k, v in load_file(str(tiny_flux.transformer)).items()
    }
    save_file(fp8, str(tmp_path / "flux1-tiny-fp8.safetensors"))
    t5 = load_file(str(models / "text_encoders" / "t5xxl_fp16.safetensors"))
    save_file(
        {k: v.to(torch.float8_e4m3fn) for k, v in t5.items()}, str(tmp_path / "t5xxl_fp8_e4m3fn.safetensors")
    )
    shutil.copy(models / "vae" / "ae.safetensors", tmp_path / "ae.safetensors")
    shutil.copy(models / "text_encoders" / "clip_l.safetensors", tmp_path / "clip_l.safetensors")
    shutil.copytree(tiny_flux.transformer.parent / "t5_tokenizer", tmp_path / "t5_tokenizer")
    base = load_base_model(
        str(tmp_path / "flux1-tiny-fp8.safetensors"),
        tokenizer_path=str(tiny_flux.tokenizer_dir),
        dtype=torch.bfloat16,
    )
    assert base.denoiser.dtype == torch.bfloat16 and base.text_encoders[1].dtype == torch.bfloat16
    reference = load_base_model(str(tiny_flux.transformer), tokenizer_path=str(tiny_flux.tokenizer_dir))
    out, ref = _output(base).float(), _output(reference)
    assert torch.isfinite(out).all() and (out - ref).norm() < 0.25 * ref.norm()  # fp8 rounding, same model


def test_target_modules_select_attention_only_or_modulation_too(tiny_flux) -> None:
    from lorascripts.network.targets import expand_roles

    base = load_base_model(str(tiny_flux.transformer), tokenizer_path=str(tiny_flux.tokenizer_dir))
    namer = base.family.kohya_name(base)

    def names(*modules: str) -> set[str]:
        targets = base.family.lora_targets(base, expand_roles(modules), with_conv=False, text=False)
        return {namer(t.component, t.path).removeprefix("lora_unet_") for t in targets}

    default = names("all")
    assert "double_blocks_0_img_attn_qkv" in default and "single_blocks_0_linear1__mlp" in default
    assert not any("mod" in n for n in default)
    assert names("all", "modulation") - default == {
        "double_blocks_0_img_mod_lin",
        "double_blocks_0_txt_mod_lin",
        "single_blocks_0_modulation_lin",
    }
    attention = names("attn")
    assert attention == {
        "double_blocks_0_img_attn_qkv",
        "double_blocks_0_txt_attn_qkv",
        "double_blocks_0_img_attn_proj",
        "double_blocks_0_txt_attn_proj",
        "single_blocks_0_linear1__qkv",
        "single_blocks_0_linear2",
    }


def test_comfyui_scaled_fp8_transformer_loads_as_weight_times_scale(tiny_flux) -> None:
    """A ComfyUI `flux1-dev-fp8-scaled`-style file (float8 weights + `scale_weight` each) loads as the weights
    ComfyUI computes with, not as the bare float8 values (which are off by the scale)."""
    from scaled_files import write_scaled_fp8

    folder = tiny_flux.transformer.parent  # beside the original: the same parts are found
    scaled, reference = (
        folder / "flux1-tiny-fp8-scaled.safetensors",
        folder / "flux1-tiny-dequantised.safetensors",
    )
    write_scaled_fp8(tiny_flux.transformer, scaled, reference)
    loaded = [
        load_base_model(str(path), tokenizer_path=str(tiny_flux.tokenizer_dir), dtype=torch.bfloat16).denoiser
        for path in (scaled, reference)
    ]
    got, want = loaded[0].state_dict(), loaded[1].state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    stored = load_file(str(scaled))["double_blocks.0.img_attn.proj.weight"].to(torch.bfloat16)
    assert not torch.equal(got["transformer_blocks.0.attn.to_out.0.weight"], stored)  # the scale was applied
