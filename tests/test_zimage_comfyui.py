"""Z-Image in a real ComfyUI 0.3.75 (HOSTS.md), through the shipped example "train a Z-Image style and use it", one
server for the module.

Training half, for real: the example's Train LoRA node on the tiny Z-Image (tests/tiny_zimage.py) in
models/diffusion_models with the VAE and Qwen3 files chosen in its part lists as the example has them; the
node's host tokenizer (ComfyUI's CLIP one) is not Z-Image's, the family finds the Qwen3 tokenizer beside the text
encoder. Config, metadata, card and progress are checked.

Apply half: a transformer of Z-Image's own width (dim 3840, 30 heads of 128, the width ComfyUI detects as Z-Image;
1 layer, 1 noise + 1 context refiner, random bf16 weights) in the original layout in models/diffusion_models; a
LoRA built by our engine on that model and saved through the trainer's own path (`family.lora_file_tensors` +
`save_lora_file`); the example's `UNETLoader` -> Load LoRA, then `ModelSave`. Every key must be applied: Load
LoRA's report, no `lora key not loaded` in the server's log, and the saved (patched) weight of every targeted layer
differs from the file's by exactly up @ down * alpha / rank (the to_q/to_k/to_v updates in their thirds of the
fused `attention.qkv`), untargeted weights bit-identical.

The expected updates are read from the engine's LoRA modules by the diffusers layer they wrap, not from the file,
so the file's key format is what is under test. About 1.1 GB on disk in bf16.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from comfy_host import (
    ComfyServer,
    WebsocketLog,
    apply_and_save,
    comfy_python,
    comfy_root,
    example_prompt,
    train_example,
)
from example_prompts import ZIMAGE_PARTS
from helpers_train import make_dataset
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_zimage import build_tiny_zimage, original_state, transformer_config

from lorascripts.host.parts import AUTOMATIC

WIDTH, HEADS, TEXT = 3840, 30, 2560  # Z-Image's width and heads; Qwen3-4B's hidden size (cap_embedder input)
MODEL, LORA = "z_image-width.safetensors", "z_image-width-lora.safetensors"
# ComfyUI's own detection and key map, run in its process on the file's shapes (meta tensors: nothing is read)
DETECT = """
import json, sys
path, sys.argv = sys.argv[1], [sys.argv[0], "--cpu"]  # ComfyUI's command line, read at import
import comfy.options
comfy.options.enable_args_parsing()
import torch
from safetensors import safe_open
import comfy.model_detection, comfy.utils
with safe_open(path, "pt") as f:
    sd = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
config = comfy.model_detection.model_config_from_unet(sd, "")
key_map = comfy.utils.z_image_to_diffusers(config.unet_config)
targets = sorted({v[0] if isinstance(v, tuple) else v for v in key_map.values()})
print(json.dumps({"model": type(config).__name__, "unet": config.unet_config, "targets": targets}))
"""


def width_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random bf16 weights of a Z-Image-width transformer in the original layout, shaped by diffusers' own class
    (built on the meta device: only the shapes are taken). The values come from one pool of 2^24 normal draws
    tiled over each tensor: drawing ~550 M numbers took 20-45 s on a shared CPU, copying takes ~1 s."""
    from diffusers import ZImageTransformer2DModel

    with torch.device("meta"):
        model = ZImageTransformer2DModel(**transformer_config(WIDTH, HEADS, layers=1, refiners=1, text=TEXT))
    pool = torch.randn(1 << 24, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)
    state, start = {}, 0
    for name, meta in original_state(model.state_dict()).items():
        if meta.dim() == 1 and "norm" in name:
            state[name] = torch.ones(meta.shape, dtype=torch.bfloat16)
            continue
        count = meta.numel()
        start = (start + 7919) % pool.numel()  # a different phase per tensor
        reps = (start + count) // pool.numel() + 1
        values = pool.repeat(reps)[start : start + count].view(meta.shape)
        std = meta.shape[1] ** -0.5 if meta.dim() == 2 and name.endswith(".weight") else 0.02
        state[name] = values * std
    return state


def comfy_detection(model_path: Path) -> dict:
    """What ComfyUI 0.3.75 makes of the file: model class, unet config and the original keys its Z-Image LoRA
    key map points at."""
    env = {**os.environ, "PYTHONPATH": str(comfy_root())}
    args = [str(comfy_python()), "-c", DETECT, str(model_path)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=str(comfy_root()), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def original_target(path: str) -> tuple[str, slice]:
    """The original-layout weight a LoRA on diffusers layer `path` changes, and the rows of it it changes (q, k
    and v are thirds of the fused `attention.qkv`)."""
    for i, part in enumerate(("to_q", "to_k", "to_v")):
        if path.endswith(f".attention.{part}"):
            rows = slice(i * WIDTH, (i + 1) * WIDTH)
            return path.replace(f".attention.{part}", ".attention.qkv") + ".weight", rows
    return next(iter(original_state({path + ".weight": torch.empty(0)}))), slice(None)


def _write_model_and_lora(base: Path, state: dict[str, torch.Tensor]) -> tuple[Path, Path, dict]:
    """The original-layout file in ComfyUI's folders, our LoRA for it written as the trainer writes its final
    file, and the update each LoRA module of the engine makes: {original weight: [(rows, up, down * scale)]}."""
    from lorascripts.models.families import BaseModel, get_family
    from lorascripts.models.families.zimage.load import load_transformer
    from lorascripts.network.lora import LoraNetwork, NetworkSpec, collect_targets
    from lorascripts.network.save import save_lora_file

    model_path = base / "models" / "diffusion_models" / MODEL
    model_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(model_path))
    family = get_family("zimage")
    transformer = load_transformer(state, model_path, torch.bfloat16)
    base_model = BaseModel(family, transformer, None, [], [], None, "flow", str(model_path), "zimage-w", 1024)
    spec = NetworkSpec(rank=4, alpha=2.0, target_modules=["all", "modulation"], train_text_encoder=False)
    network = LoraNetwork.create(base_model, spec)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in network.lora_modules.values():
            module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape, generator=gen) * 0.1)
    namer = family.kohya_name(base_model)
    expected: dict[str, list[tuple[slice, torch.Tensor, torch.Tensor]]] = {}
    for target in collect_targets(base_model, spec):
        module = network.lora_modules[namer(target.component, target.path)]
        # the factors as the bf16 file holds them, so only ComfyUI's own arithmetic is measured
        down, up = (
            w.detach().to(torch.bfloat16).float() for w in (module.lora_down.weight, module.lora_up.weight)
        )
        key, rows = original_target(target.path)
        expected.setdefault(key, []).append((rows, up, down * (spec.alpha / spec.rank)))  # delta = up @ down
    tensors = family.lora_file_tensors(base_model, network.kohya_state_dict())
    metadata = {
        **family.lora_metadata(v_prediction=False, resolution=1024),
        **family.model_metadata(base_model),
    }
    lora_path = save_lora_file(base / "models" / "loras" / LORA, tensors, metadata, dtype=torch.bfloat16)
    del transformer, network, tensors
    gc.collect()
    return model_path, lora_path, expected


EXAMPLE = "lora-scripts train a Z-Image style and use it"
TINY = "z_image_tiny.safetensors"


@dataclass
class ZImageComfy:
    server: ComfyServer
    events: WebsocketLog
    model_path: Path  # the Z-Image-width transformer
    lora_path: Path  # our LoRA for it
    expected: dict  # its updates, as `_write_model_and_lora` returns them
    matrices: set[str]  # the transformer's 2-D weights


@pytest.fixture(scope="module")
def zimage_comfy(tmp_path_factory):
    """A ComfyUI whose folders hold the tiny Z-Image (transformer, qwen_3_4b and ae files as the example names
    them, the Qwen3 tokenizer beside the text encoder) and the Z-Image-width transformer with our LoRA for it."""
    base = tmp_path_factory.mktemp("comfy_zimage")
    tiny = build_tiny_zimage(base)
    shutil.copytree(tiny.tokenizer_dir, base / "models" / "text_encoders" / "qwen_tokenizer")
    state = width_state()
    model_path, lora_path, expected = _write_model_and_lora(base, state)
    matrices = {k for k, v in state.items() if v.dim() == 2 and k.endswith(".weight")}
    del state
    gc.collect()
    server = ComfyServer(base)
    events = WebsocketLog(server.port, server.client_id)
    yield ZImageComfy(server, events, model_path, lora_path, expected, matrices)
    events.close()
    server.stop()


def test_example_trains_zimage_with_the_chosen_parts(zimage_comfy) -> None:
    """The example's training half, made small: the tiny Z-Image, 32 px, 2 steps, its part lists as shipped."""
    server, events = zimage_comfy.server, zimage_comfy.events
    node = server.get("/object_info")["LoraScriptsTrainLoRA"]["input"]
    assert {TINY, zimage_comfy.model_path.name} <= set(node["required"]["ckpt_name"][1]["options"])
    optional = node["optional"]
    assert optional["vae"][1]["options"] == [AUTOMATIC, "ae.safetensors"]
    assert optional["text_encoder"][1]["options"] == [AUTOMATIC, "qwen_3_4b.safetensors"]
    assert "Z-Image: Qwen3-4B" in optional["text_encoder"][1]["tooltip"]
    make_dataset(server.base / "input" / "zimage_data", n=2)
    prompt = example_prompt(server, EXAMPLE)
    assert {k: prompt["5"]["inputs"][k] for k in ZIMAGE_PARTS} == ZIMAGE_PARTS
    prompt = {"4": prompt["4"], "5": prompt["5"]}
    prompt["4"]["inputs"]["folder"] = "zimage_data"
    advanced = "text_max_length: 16\nbucket_reso_steps: 8\nmin_bucket_reso: 16\nmixed_precision: 'no'\n"
    train = dict(ckpt_name=TINY, lora_name="zimage_ex", rank=4, alpha=4.0, steps=2, resolution=32)
    prompt["5"]["inputs"].update(
        memory_preset="off", sample_prompt="", advanced_yaml=advanced + "dataset_checks: warn\n", **train
    )
    config, lora = train_example(server, events, prompt, ZIMAGE_PARTS)
    assert not config.get("tokenizer_path")  # the node passes its tokenizer roots, never a tokenizer_path
    with safe_open(str(lora), "pt") as fh:
        assert fh.metadata()["ss_base_model_version"] == "zimage"
        assert any(k.startswith("lora_unet_layers_0_attention_qkv.") for k in fh.keys())
    assert json.loads(lora.with_suffix(".json").read_text())["sd version"] == "Z-Image"  # the WebUI card


def test_comfyui_applies_every_key_of_our_zimage_lora(zimage_comfy) -> None:
    server, model_path, expected = zimage_comfy.server, zimage_comfy.model_path, zimage_comfy.expected
    # ComfyUI reads the file as Z-Image, and its LoRA key map (`z_image_to_diffusers`, a superset: biases,
    # refiner 1) points at every matrix of the file by its name
    detected = comfy_detection(model_path)
    assert detected["model"] == "ZImage", detected["model"]
    assert detected["unet"]["dim"] == WIDTH and detected["unet"]["n_layers"] == 1
    matrices = zimage_comfy.matrices
    # 5 in each of the 3 blocks, adaLN in the 2 modulated ones, 6 in the embedders and the final layer
    assert len(matrices) == 23, sorted(matrices)
    assert not sorted(matrices - set(detected["targets"]))
    # every block Linear has a LoRA: 3 x (qkv, out, w1, w2, w3) + 2 adaLN
    assert len(expected) == 17 and len(expected["layers.0.attention.qkv.weight"]) == 3, sorted(expected)
    saved = apply_and_save(server, EXAMPLE, model_path.name, zimage_comfy.lora_path.name, "patched/zimage")
    _assert_updates(model_path, saved, expected)


def _assert_updates(model_path: Path, saved: Path, expected: dict) -> None:
    with safe_open(str(model_path), "pt") as before, safe_open(str(saved), "pt") as after:
        prefix = "model.diffusion_model." if any(k.startswith("model.") for k in after.keys()) else ""
        for key in before.keys():
            change = after.get_tensor(prefix + key).float() - before.get_tensor(key).float()
            if key not in expected:
                assert change.abs().max() == 0, f"{key} has no LoRA but changed"
                continue
            for rows, up, down in expected[key]:
                delta = up @ down
                err = (change[rows] - delta).norm() / delta.norm()
                assert delta.norm() > 0 and err < 0.01, f"{key}[{rows}]: ComfyUI's update is off by {err:.4f}"
