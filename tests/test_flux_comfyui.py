"""FLUX.1 in a real ComfyUI 0.3.75 (HOSTS.md), through the shipped example "train a FLUX style and use it".

Training half, for real: Train LoRA on the tiny FLUX (tests/tiny_flux.py) in models/diffusion_models with its VAE,
CLIP-L and T5 files chosen in the node's part lists, as the example has them; the run's progress, LoRA file and
card are the SD ones. Apply half: ComfyUI detects FLUX only at FLUX.1's own width (24 heads of 128), and its
DualCLIPLoader builds the full T5-XXL (4.7 B parameters) whatever the file holds, so the sampling half cannot run
on tiny files. It runs the example's UNETLoader and Load LoRA nodes on a transformer of that width (1 double + 1
single block, random bf16 weights, ~1 GB) with a LoRA our engine built for it and saved through the trainer's own
path (`family.lora_file_tensors` + `save_lora_file`), then `ModelSave`: every key must be applied (no `lora key not
loaded` in the server's log), the saved (patched) weights of every targeted layer differ from the file's by
exactly the LoRA's update, untargeted ones unchanged. Cancel and the rerun that resumes, as for SD. Also: a
workflow saved before the FLUX widgets still loads. One server for the module."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch
from comfy_host import (
    ComfyServer,
    WebsocketLog,
    apply_and_save,
    cancel_keeps_a_checkpoint,
    comfy_root,
    example_prompt,
    rerun_resumes,
    train_example,
)
from example_prompts import FLUX_PARTS, train_style_and_use
from helpers_train import make_dataset
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_flux import bfl_transformer, build_tiny_flux
from workflow_format import to_api

from lorascripts.host.form import CHOICE_BY_NAME
from lorascripts.host.parts import AUTOMATIC, part_fields
from lorascripts.toolbox.inspect import inspect_lora

WIDTH, HEAD = 3072, 128
MODEL, LORA = "flux1-width.safetensors", "flux1-width-lora.safetensors"


def _write_model_and_lora(base: Path) -> tuple[Path, Path]:
    """The BFL file in ComfyUI's folders and our LoRA for it, written as the trainer writes its final file."""
    from lorascripts.models.families import BaseModel, get_family
    from lorascripts.models.families.flux1.load import load_transformer
    from lorascripts.network.lora import LoraNetwork, NetworkSpec
    from lorascripts.network.save import save_lora_file

    model_path = base / "models" / "diffusion_models" / MODEL
    model_path.parent.mkdir(parents=True, exist_ok=True)
    state = bfl_transformer(0, guidance=True, hidden=WIDTH, head_dim=HEAD, dtype=torch.bfloat16)
    save_file(state, str(model_path))
    family = get_family("flux1")
    transformer = load_transformer(state, model_path, torch.bfloat16)
    del state
    base_model = BaseModel(
        family, transformer, None, [], [], None, "flow", str(model_path), "flux-width", 1024
    )
    network = LoraNetwork.create(
        base_model,
        NetworkSpec(rank=4, alpha=4.0, target_modules=["all", "modulation"], train_text_encoder=False),
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in network.lora_modules.values():
            module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape, generator=gen))
    tensors = family.lora_file_tensors(base_model, network.kohya_state_dict())
    metadata = {
        **family.lora_metadata(v_prediction=False, resolution=1024),
        **family.model_metadata(base_model),
    }
    lora_path = save_lora_file(base / "models" / "loras" / LORA, tensors, metadata, dtype=torch.bfloat16)
    del transformer, network, tensors
    gc.collect()
    return model_path, lora_path


def _expected_deltas(lora: Path) -> dict[str, torch.Tensor]:
    """kohya's rule per module: up @ down * alpha / rank, keyed by the BFL weight it changes."""
    out = {}
    with safe_open(str(lora), "pt") as f:
        modules = {k.split(".", 1)[0] for k in f.keys()}
        for module in sorted(modules):
            down = f.get_tensor(f"{module}.lora_down.weight").float()
            up = f.get_tensor(f"{module}.lora_up.weight").float()
            alpha = f.get_tensor(f"{module}.alpha").item()
            name = module.removeprefix("lora_unet_")
            for block in ("double_blocks", "single_blocks"):
                name = name.replace(f"{block}_0_", f"{block}.0.")
            layer = name.replace("img_attn_", "img_attn.").replace("txt_attn_", "txt_attn.")
            layer = layer.replace("_mod_lin", "_mod.lin").replace("modulation_lin", "modulation.lin")
            layer = layer.replace("img_mlp_", "img_mlp.").replace("txt_mlp_", "txt_mlp.")
            out[f"{layer}.weight"] = up @ down * (alpha / down.shape[0])
    return out


FLUX_EXAMPLE = "lora-scripts train a FLUX style and use it"
COMFY_PACKAGE, COMFY_T5 = (comfy_root() / "comfy").resolve(), "text_encoders/t5_tokenizer"
TINY = "flux1-tiny.safetensors"


def _tiny_training(server: ComfyServer, name: str, steps: int) -> dict:
    """The FLUX example's Load Dataset ("4") and Train LoRA ("5") with its part lists as shipped, made small: the
    tiny FLUX, a 2-image dataset of its own, 32 px, `steps` steps, rank 4."""
    make_dataset(server.base / "input" / name, n=2)
    example = example_prompt(server, FLUX_EXAMPLE)
    prompt = {"4": example["4"], "5": example["5"]}
    prompt["4"]["inputs"]["folder"] = name
    advanced = (
        "text_max_length: 16\nbucket_reso_steps: 8\n"
        "min_bucket_reso: 16\nmixed_precision: 'no'\ndataset_checks: warn\n"
    )
    train = dict(
        ckpt_name=TINY, lora_name=name, rank=4, alpha=4.0, steps=steps, resolution=32, sample_prompt=""
    )
    prompt["5"]["inputs"].update(memory_preset="off", advanced_yaml=advanced, **train)
    return prompt


@pytest.fixture(scope="module")
def flux_comfy(tmp_path_factory):
    """A ComfyUI whose folders hold the tiny FLUX (transformer in models/diffusion_models, ae / clip_l / t5xxl
    files as the example names them) and the FLUX-width transformer with our LoRA for it. The tiny CLIP and T5
    take the vocabularies of the tokenizers ComfyUI ships (`comfy/sd1_tokenizer`, `comfy/text_encoders/
    t5_tokenizer`), and no tokenizer is anywhere else: not beside the model, not in the (empty, offline) Hugging
    Face cache."""
    base = tmp_path_factory.mktemp("comfy_flux")
    build_tiny_flux(base, COMFY_PACKAGE / "sd1_tokenizer", t5_tokenizer_dir=COMFY_PACKAGE / COMFY_T5)
    model_path, lora_path = _write_model_and_lora(base)
    hf_home = tmp_path_factory.mktemp("hf_home_empty")
    server = ComfyServer(base, env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    events = WebsocketLog(server.port, server.client_id)
    yield server, events, model_path, lora_path
    events.close()
    server.stop()


def test_train_lora_lists_flux_models_parts_and_memory_presets(flux_comfy) -> None:
    server, *_ = flux_comfy
    node = server.get("/object_info")["LoraScriptsTrainLoRA"]["input"]
    required, optional = node["required"], node["optional"]
    assert {TINY, MODEL} <= set(
        required["ckpt_name"][1]["options"]
    )  # models/diffusion_models beside checkpoints
    assert (
        "flux1-tiny-aio.safetensors" in required["ckpt_name"][1]["options"]
    )  # and the all-in-one checkpoint
    keys = [spec.key for spec in part_fields()]
    assert keys[:3] == [
        "vae",
        "text_encoder",
        "text_encoder_2",
    ]  # one list per part key, appended in that order
    assert list(optional)[-len(keys) - 1 :] == ["memory_preset", *keys]  # after every older widget
    assert optional["vae"][1]["options"] == [AUTOMATIC, "ae.safetensors"]
    for key in keys[1:]:
        assert optional[key][1]["options"] == [AUTOMATIC, "clip_l.safetensors", "t5xxl_fp16.safetensors"]
        assert "FLUX.1: " in optional[key][1]["tooltip"]
    memory = optional["memory_preset"][1]
    assert memory["default"] == "off" and memory["options"] == CHOICE_BY_NAME["memory_preset"].choices
    assert memory["tooltip"] == CHOICE_BY_NAME["memory_preset"].tooltip and "24gb" in memory["tooltip"]


def test_example_trains_flux_with_the_chosen_parts(flux_comfy) -> None:
    """The example's training half, made small: the tiny FLUX, 32 px, 2 steps, its part lists as shipped; both
    tokenizers come from ComfyUI's own copies, which the node passes to the training child as a tokenizer root
    (the child runs in the engine's Python, where `comfy` is not importable)."""
    server, events, *_ = flux_comfy
    prompt = _tiny_training(server, "flux_ex", steps=2)
    assert {k: prompt["5"]["inputs"][k] for k in FLUX_PARTS} == FLUX_PARTS
    bad = json.loads(json.dumps(prompt))
    bad["5"]["inputs"]["vae"] = "../../etc/ae.safetensors"  # not in its list: refused before anything runs
    assert server.post_raw("/prompt", {"prompt": bad, "client_id": server.client_id}) == 400
    config, lora = train_example(server, events, prompt, FLUX_PARTS)
    assert config["memory_preset"] == "off"
    assert [Path(p).resolve() for p in config["tokenizer_roots"]] == [COMFY_PACKAGE]
    assert not any((server.base / "models").rglob("t5_tokenizer")) and not config.get("tokenizer_path")
    log = (server.base / "output" / "lora-scripts" / "runs" / "flux_ex" / "train_output.log").read_text()
    for folder in ("sd1_tokenizer", COMFY_T5):  # the CLIP-L and T5 tokenizers ComfyUI ships
        assert f"tokenizer: {Path(config['tokenizer_roots'][0]) / folder}" in log, log[-3000:]
    with safe_open(str(lora), "pt") as fh:
        assert fh.metadata()["ss_base_model_version"] == "flux1"
        assert any(k.startswith("lora_unet_double_blocks_0_") for k in fh.keys())
    assert json.loads(lora.with_suffix(".json").read_text())["sd version"] == "Flux"  # the WebUI card


def test_cancel_keeps_a_checkpoint_and_the_rerun_resumes(flux_comfy) -> None:
    """Cancel a FLUX run in ComfyUI, then queue the same graph again: it resumes from the checkpoint Cancel kept
    and finishes with a FLUX LoRA (SD's in test_comfyui.py, with the same helpers). Cancel is pressed while the
    model loads, so the run stops after step 1 on a fast machine too (see `cancel_keeps_a_checkpoint`)."""
    server, events, *_ = flux_comfy
    prompt = _tiny_training(server, "flux_cancel", steps=4)
    stopped = cancel_keeps_a_checkpoint(server, events, prompt, on_event="loading_model")
    assert stopped == 1
    lora = rerun_resumes(server, events, prompt, stopped)
    info = inspect_lora(lora)
    assert info["family"] == "flux1" and not info["problems"], info
    with safe_open(str(lora), "pt") as fh:
        keys, steps = set(fh.keys()), fh.metadata()["ss_steps"]
    assert steps == "4"  # the resumed run's count went on from the checkpoint's
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in keys, sorted(keys)
    assert "lora_unet_single_blocks_0_linear1.lora_down.weight" in keys, sorted(keys)


def test_a_workflow_saved_before_the_flux_widgets_still_loads(flux_comfy) -> None:
    """The SD example as it was saved before the memory and part lists were appended: its widget values land on
    the same widgets, and the new ones are left to their defaults (ComfyUI fills widgets by position)."""
    server, *_ = flux_comfy
    info = server.get("/object_info")
    saved = Path(__file__).parent / "saved_workflows" / "train a style and use it (before FLUX).json"
    old = to_api(json.loads(saved.read_text(encoding="utf-8")), info)
    expected = train_style_and_use()
    assert old.keys() == expected.keys()
    assert old["4"]["inputs"] == expected["4"]["inputs"]  # no value shifted; memory_preset / parts unset
    assert old["5"]["inputs"] == expected["5"]["inputs"]


def test_comfyui_applies_every_key_of_our_flux_lora(flux_comfy) -> None:
    server, _, model_path, lora_path = flux_comfy
    expected = _expected_deltas(lora_path)
    # every block layer kohya names, the single block's fused linear1 among them
    assert {"single_blocks.0.linear1.weight", "double_blocks.0.txt_attn.qkv.weight"} <= set(expected)
    assert len(expected) == 13, sorted(expected)  # 10 double-block layers, 3 single-block ones
    saved = apply_and_save(server, FLUX_EXAMPLE, MODEL, LORA, "patched/flux")
    with safe_open(str(model_path), "pt") as before, safe_open(str(saved), "pt") as after:
        prefix = (
            "model.diffusion_model."
            if any(k.startswith("model.diffusion_model.") for k in after.keys())
            else ""
        )
        for layer, delta in expected.items():
            change = after.get_tensor(prefix + layer).float() - before.get_tensor(layer).float()
            err = (change - delta).norm() / delta.norm()
            assert delta.norm() > 0 and err < 0.05, (
                f"{layer}: ComfyUI's update differs from the file's by {err:.3f}"
            )
        untouched = (
            after.get_tensor(prefix + "img_in.weight").float() - before.get_tensor("img_in.weight").float()
        )
        assert untouched.abs().max() == 0, "a layer without LoRA changed"
