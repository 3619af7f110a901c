"""Z-Image on the family seam: the files ComfyUI users have (original-layout transformer bf16/fp8 +
qwen_3_4b + ae in ComfyUI's folders) and a ZImagePipeline folder loaded through `load_base_model`; the objective
against ZImagePipeline's own Euler step; a training run whose loss falls and whose file holds ComfyUI's kohya
Z-Image keys; diffusers' load_lora_weights on our file; resume; bad inputs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers_train import largest_difference, make_dataset, tiny_config, train_stopped_and_resumed
from safetensors.torch import load_file, save_file

from lorascripts.config import config_from_dict
from lorascripts.errors import ModelError
from lorascripts.models import load_base_model
from lorascripts.models.families import get_family
from lorascripts.run.events import read_events
from lorascripts.train.trainer import train

KOHYA_ZIMAGE_KEY = (
    r"^lora_unet_(layers|noise_refiner|context_refiner)_\d+_"
    r"(attention_qkv|attention_out|feed_forward_w[123]|adaLN_modulation_0)\.(lora_down\.weight|lora_up\.weight|alpha)$"
)
CAPTIONS = ["a red circle", "zkstyle a small blue square on the picture"]


def _load(tiny, path: Path | None = None, dtype: torch.dtype = torch.float32, **kw):
    base = load_base_model(
        str(path or tiny.transformer), tokenizer_path=str(tiny.tokenizer_dir), dtype=dtype, **kw
    )
    base.extra["config"] = type("Run", (), {"text_max_length": 32})()
    return base


def _output(base, sigma: float = 0.4) -> torch.Tensor:
    family = base.family
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cond = family.encode_tokens(base, family.tokenize(base, CAPTIONS), clip_skip=1)
        noisy = torch.randn(2, 16, 4, 4, generator=gen)
        t = family.objective(base, min_snr_gamma=None).model_timesteps(torch.tensor([sigma, sigma]))
        return family.predict(base, noisy.to(base.denoiser.dtype), t, cond).float()


def test_every_form_loads_to_the_same_model(tiny_zimage, tmp_path: Path) -> None:
    single = _load(tiny_zimage)
    prefixed = tmp_path / "z_image_saved.safetensors"  # ComfyUI's save of the model: `model.diffusion_model.`
    save_file({f"model.diffusion_model.{k}": v for k, v in load_file(str(tiny_zimage.transformer)).items()},
              str(prefixed))  # fmt: skip
    parts = {"text_encoder": str(tiny_zimage.text_encoder), "vae": str(tiny_zimage.vae)}
    assert torch.equal(_output(_load(tiny_zimage, prefixed, components=parts)), _output(single))
    assert single.family.name == "zimage" and single.noise_scheduler.config.shift == 3.0
    folder = load_base_model(str(tiny_zimage.diffusers_dir))
    folder.extra["config"] = single.extra["config"]
    fp8 = _load(tiny_zimage, tiny_zimage.transformer_fp8, torch.bfloat16)
    ref = _output(single)
    assert ref.abs().mean() > 0.05
    # the single file is stored in bf16 (the folder in fp32), the fp8 file rounds further
    assert (_output(folder) - ref).abs().max() < 0.02 * ref.abs().max()
    assert (_output(fp8) - ref).abs().mean() < 0.2 * ref.abs().mean()
    assert single.extra["metadata"]["ls_zimage_variant"] == "unknown"


def test_caption_features_and_objective_match_zimagepipeline(tiny_zimage) -> None:
    """Our caption features are the pipeline's prompt_embeds, and one Euler step of ZImagePipeline from x_σ is
    x_σ − σ·(our prediction): the 1 − σ timestep and the sign of the output are the pipeline's."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from lorascripts.models.families.zimage.predict import caption_features

    base = load_base_model(str(tiny_zimage.diffusers_dir))
    base.extra["config"] = type("Run", (), {"text_max_length": 32})()
    family = base.family
    pipe = family.sampling_pipeline(base)
    embeds, _ = pipe.encode_prompt(list(CAPTIONS), do_classifier_free_guidance=False, max_sequence_length=32)
    cond = family.encode_tokens(base, family.tokenize(base, CAPTIONS), clip_skip=1)
    ours = caption_features(cond, "cpu", torch.float32)
    assert [e.shape for e in embeds] == [o.shape for o in ours] and embeds[0].shape[0] < 32
    assert all(torch.equal(e, o) for e, o in zip(embeds, ours))

    pipe.scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0
    )  # the sigma we give is the sigma it steps from
    objective = family.objective(base, min_snr_gamma=None)
    latents, noise = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    sigma = 0.6
    noisy, target = objective.noisy_input(latents, noise, torch.tensor([sigma, sigma]))
    assert torch.allclose(target, noise - latents)
    with torch.no_grad():
        step = pipe(
            prompt_embeds=embeds,
            latents=noisy,
            sigmas=[sigma],
            num_inference_steps=1,
            guidance_scale=0.0,
            height=4 * pipe.vae_scale_factor,
            width=4 * pipe.vae_scale_factor,
            output_type="latent",
        ).images
        pred = family.predict(base, noisy, objective.model_timesteps(torch.tensor([sigma, sigma])), cond)
    assert torch.allclose(step, noisy - sigma * pred, atol=1e-5)


@pytest.fixture(scope="module")
def trained(tiny_zimage, tmp_path_factory):
    root = tmp_path_factory.mktemp("zimage_train")
    data = make_dataset(root / "data", n=4)
    cfg = tiny_config(
        tiny_zimage, data, root / "out", model_family="zimage", max_train_steps=30, learning_rate=5e-3,
        batch_size=4, text_max_length=32, timestep_sampling="sigmoid", train_text_encoder=False,
        cache_text_encoder_outputs="memory", validation_split=1, validate_every_n_steps=15,
    )  # fmt: skip
    train(config_from_dict(cfg))
    return root / "out"


def test_training_run_loss_falls_and_file_is_comfyui_kohya(trained) -> None:
    from safetensors import safe_open

    losses = [e["loss"] for e in read_events(trained / "events.jsonl") if e["event"] == "step"]
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < first * 0.9, f"loss did not fall: first {first:.4f}, last {last:.4f}"
    path = trained / "tiny.safetensors"
    tensors = load_file(str(path))
    bad = [k for k in tensors if not re.match(KOHYA_ZIMAGE_KEY, k)]
    assert not bad, f"not ComfyUI Z-Image keys: {bad[:5]}"
    modules = {k.split(".")[0] for k in tensors}
    assert all(f"{m}.alpha" in tensors for m in modules)
    for block in ("layers_0", "layers_1", "noise_refiner_0", "context_refiner_0"):
        assert (
            f"lora_unet_{block}_attention_qkv" in modules and f"lora_unet_{block}_feed_forward_w2" in modules
        )
    assert not any("adaLN" in m for m in modules)  # modulation only when asked for
    assert tensors["lora_unet_layers_0_attention_qkv.lora_up.weight"].shape == (3 * 64, 12)  # q, k, v rank 4
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_base_model_version"] == "zimage" and meta["modelspec.architecture"] == "Z-Image/lora"
    events = [e for e in read_events(trained / "events.jsonl") if e["event"] == "self_test"]
    assert events and events[-1]["ok"], events
    validation = [e["loss"] for e in read_events(trained / "events.jsonl") if e["event"] == "validation"]
    assert len(validation) >= 2 and all(0 < v < 10 for v in validation)  # fixed sigmas 1/8 .. 7/8


def test_our_file_reloads_to_the_trained_network_and_diffusers_applies_it(
    trained, tiny_zimage, tmp_path
) -> None:
    """Our kohya file read back (qkv split again) and diffusers' ZImagePipeline.load_lora_weights on the same
    file in ai-toolkit's keys change the transformer alike."""
    from diffusers import ZImagePipeline

    from lorascripts.network.from_file import load_lora
    from lorascripts.toolbox.convert import kohya_to_peft

    base = _load(tiny_zimage, tiny_zimage.diffusers_dir)
    before = _output(base)
    network = load_lora(base, trained / "tiny.safetensors")
    mine = _output(base)
    network.set_multiplier(0.0)
    assert torch.allclose(_output(base), before, atol=1e-6)
    change = (mine - before).norm()
    assert change > 0.01 * before.norm()

    peft, skipped = kohya_to_peft("zimage", load_file(str(trained / "tiny.safetensors")))
    assert not skipped and all(k.startswith("diffusion_model.") for k in peft)
    save_file(peft, str(tmp_path / "ai-toolkit.safetensors"))
    theirs = _load(tiny_zimage, tiny_zimage.diffusers_dir)
    ZImagePipeline(None, None, None, None, theirs.denoiser).load_lora_weights(
        str(tmp_path / "ai-toolkit.safetensors")
    )
    after = _output(theirs)
    assert (after - mine).norm() < 0.01 * change, f"diffusers differs by {(after - mine).norm() / change:.4f}"


def test_stop_and_resume_ends_with_the_uninterrupted_weights(tiny_zimage, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_zimage, data, tmp_path / "ref", max_train_steps=4, text_max_length=16,
                      train_text_encoder=False)  # fmt: skip
    ref = train(config_from_dict(cfg))
    resumed = train_stopped_and_resumed(cfg, tmp_path / "cut", 2)
    worst = largest_difference(ref.lora_path, resumed.lora_path)
    assert worst < 1e-6, f"resumed weights differ from an uninterrupted run by {worst}"


def test_bad_inputs_name_the_file(tiny_zimage, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_zimage.root / "models", models)
    transformer = models / "diffusion_models" / tiny_zimage.transformer.name
    (models / "text_encoders" / "qwen_3_4b.safetensors").unlink()
    with pytest.raises(
        ModelError, match=r"Qwen3-4B text encoder \(qwen_3_4b\.safetensors\) was not found.*text_encoder"
    ):
        _load(tiny_zimage, transformer)
    with pytest.raises(ModelError, match=r"ae\.safetensors is not a Qwen3 text encoder"):
        _load(tiny_zimage, transformer, components={"text_encoder": str(tiny_zimage.vae)})
    # a tokenizer with more tokens than the encoder's embedding rows is another model's
    small = tmp_path / "small_te.safetensors"
    state = load_file(str(tiny_zimage.text_encoder))
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"][:100].clone()
    save_file(state, str(small))
    with pytest.raises(
        ModelError, match=r"tokenizer .* does not match the text encoder small_te\.safetensors"
    ):
        _load(tiny_zimage, tiny_zimage.transformer, components={"text_encoder": str(small)})
    with pytest.raises(
        ModelError, match=r"z_image_tiny\.safetensors is a Z-Image model, but model_family is flux1"
    ):
        _load(tiny_zimage, expected_family="flux1")
    blocks = tmp_path / "qwen_3_4b_nvfp4.safetensors"  # block scales are no plain product: refused by name
    save_file({**state, "model.layers.0.mlp.up_proj.weight_scale": torch.ones(2, 3)}, str(blocks))
    with pytest.raises(ModelError, match=r"qwen_3_4b_nvfp4\.safetensors is block-quantised"):
        _load(tiny_zimage, tiny_zimage.transformer, components={"text_encoder": str(blocks)})
    # a FLUX.1 transformer (its parts nowhere near) is named as FLUX.1, not as a Z-Image missing its parts
    from tiny_flux import bfl_transformer

    flux = models / "diffusion_models" / "flux1-tiny.safetensors"
    save_file(bfl_transformer(0), str(flux))
    with pytest.raises(
        ModelError, match=r"flux1-tiny\.safetensors is a FLUX\.1 model, but model_family is zimage"
    ):
        _load(tiny_zimage, flux, expected_family="zimage")


def test_family_is_registered_and_knows_its_layers(tiny_zimage) -> None:
    from lorascripts.models.families import family_names

    family = get_family("zimage")
    assert "zimage" in family_names() and family.swap_blocks == (("layers", 1),)
    reference = family.webui_layers(family.reference_model())
    assert reference["lora_unet_layers_29_attention_qkv"] == (3 * 3840, 3840)
    assert reference["lora_unet_noise_refiner_1_adaLN_modulation_0"] == (4 * 3840, 256)
    from lorascripts.models.files import safetensors_shapes

    layers = family.checkpoint_layers(safetensors_shapes(tiny_zimage.transformer, "transformer"))
    assert layers["lora_unet_layers_1_attention_qkv"] == ("layers.1.attention.qkv.weight", (192, 64))


def test_turbo_is_detected_from_the_name_and_the_config_can_say_otherwise(
    tiny_zimage, tmp_path, caplog
) -> None:
    turbo = tmp_path / "z_image_turbo_tiny.safetensors"
    shutil.copy(tiny_zimage.transformer, turbo)
    parts = {"text_encoder": str(tiny_zimage.text_encoder), "vae": str(tiny_zimage.vae)}
    base = _load(tiny_zimage, turbo, components=parts)
    family = base.family
    assert base.extra["metadata"]["ls_zimage_variant"] == "turbo"
    assert family.model_metadata(base) == {"ls_zimage_variant": "turbo"}
    family.objective(base, min_snr_gamma=None)  # what a run builds first: the Turbo warning
    assert "Z-Image Turbo" in caplog.text
    caplog.clear()
    base.extra["config"] = type("Run", (), {"model_variant": "base"})()
    assert family.model_metadata(base) == {"ls_zimage_variant": "base"}
    family.objective(base, min_snr_gamma=None)
    assert "Z-Image Turbo" not in caplog.text
    from lorascripts.models.families.zimage.variant import variant_of

    names = ("z_image_turbo_bf16", "Z-Image-De-Turbo", "z_image_bf16", "Tongyi-MAI/Z-Image-Turbo")
    assert [variant_of(n, {}) for n in names] == ["turbo", "base", "unknown", "turbo"]


def test_musubi_tuner_names_load_as_the_same_network(trained, tiny_zimage, tmp_path: Path) -> None:
    """musubi-tuner's own Z-Image names (`lora_unet_layers_0_attention_to_q`, `..._attention_to_out_0`) are read
    as the q/k/v parts and the output projection: the same change as our file."""
    from lorascripts.network.from_file import load_lora

    base = _load(tiny_zimage, tiny_zimage.diffusers_dir)
    ours = base.family.lora_network_tensors(base, load_file(str(trained / "tiny.safetensors")))
    musubi = {
        k.replace("_attention_qkv__", "_attention_to_").replace("_attention_out.", "_attention_to_out_0."): v
        for k, v in ours.items()
    }
    assert "lora_unet_layers_0_attention_to_k.lora_up.weight" in musubi
    save_file(musubi, str(tmp_path / "musubi.safetensors"), metadata={"ss_base_model_version": "zimage"})
    from lorascripts.toolbox.inspect import inspect_lora

    assert inspect_lora(tmp_path / "musubi.safetensors")["family"] == "zimage"
    before = _output(base)
    load_lora(base, trained / "tiny.safetensors")
    mine = _output(base)
    other = _load(tiny_zimage, tiny_zimage.diffusers_dir)
    load_lora(other, tmp_path / "musubi.safetensors")
    assert (mine - before).norm() > 0 and torch.allclose(_output(other), mine, atol=1e-5)


def test_comfyui_scaled_fp8_files_load_as_weight_times_scale(tiny_zimage, tmp_path: Path) -> None:
    """ComfyUI's scaled fp8 transformer and Qwen3 files (float8 weights + `scale_weight` each) load as the weights
    ComfyUI computes with, the same path as FLUX.1's (models/scaled_fp8.py)."""
    from scaled_files import write_scaled_fp8

    files = {}
    for name, source in (("z_image_tiny", tiny_zimage.transformer), ("qwen_3_4b", tiny_zimage.text_encoder)):
        files[name] = (
            tmp_path / f"{name}_fp8_scaled.safetensors",
            tmp_path / f"{name}_dequantised.safetensors",
        )
        write_scaled_fp8(source, *files[name])
    loaded = [
        _load(
            tiny_zimage,
            files["z_image_tiny"][i],
            torch.bfloat16,
            components={"text_encoder": str(files["qwen_3_4b"][i]), "vae": str(tiny_zimage.vae)},
        )
        for i in (0, 1)
    ]
    for part in ("denoiser", "text_encoders"):
        got, want = (getattr(b, part) for b in loaded)
        got, want = (m[0] if isinstance(m, list) else m for m in (got, want))
        got, want = got.state_dict(), want.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), part
    assert torch.equal(_output(loaded[0]), _output(loaded[1]))
