"""Our Z-Image LoRA file in a real ComfyUI 0.3.75 (HOSTS.md): a transformer of Z-Image's own width (dim 3840,
30 heads of 128, the width ComfyUI detects as Z-Image; 1 layer, 1 noise + 1 context refiner, random bf16 weights)
in the original layout in models/diffusion_models; a LoRA built by our engine on that model and saved through the
trainer's own path (`family.lora_file_tensors` + `save_lora_file`); `UNETLoader` -> `LoraLoaderModelOnly` ->
`ModelSave`. Every key must be applied: no `lora key not loaded` in the server's log, and the saved (patched)
weight of every targeted layer differs from the file's by exactly up @ down * alpha / rank (the to_q/to_k/to_v
updates in their thirds of the fused `attention.qkv`), untargeted weights bit-identical.

The expected updates are read from the engine's LoRA modules by the diffusers layer they wrap, not from the file,
so the file's key format is what is under test. About 1.1 GB on disk in bf16.
"""

from __future__ import annotations

import gc
import os
import subprocess
from pathlib import Path

import torch
from comfy_host import comfy_python, comfy_root
from safetensors.torch import save_file
from tiny_zimage import original_state, transformer_config

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
    import json

    env = {**os.environ, "PYTHONPATH": str(comfy_root())}
    args = [str(comfy_python()), "-c", DETECT, str(model_path)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=str(comfy_root()), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def original_target(path: str) -> tuple[str, slice | None]:
    """The original-layout weight a LoRA on diffusers layer `path` changes, and the rows of it (q, k, v are
    thirds of the fused `attention.qkv`)."""
    for i, part in enumerate(("to_q", "to_k", "to_v")):
        if path.endswith(f".attention.{part}"):
            return path.replace(f".attention.{part}", ".attention.qkv") + ".weight", slice(
                i * WIDTH, (i + 1) * WIDTH
            )
    renamed = original_state({path + ".weight": torch.empty(0)})
    return next(iter(renamed)), None


def test_comfyui_detects_the_width_model_as_z_image(tmp_path: Path) -> None:
    """The harness itself: ComfyUI reads our original-layout file as Z-Image, and its LoRA key map
    (`z_image_to_diffusers`, a superset: biases, refiner 1) points at every matrix of the file by its name."""
    path = tmp_path / MODEL
    state = width_state()
    save_file(state, str(path))
    detected = comfy_detection(path)
    assert detected["model"] == "ZImage", detected["model"]
    assert detected["unet"]["dim"] == WIDTH and detected["unet"]["n_layers"] == 1
    matrices = {k for k, v in state.items() if v.dim() == 2 and k.endswith(".weight")}
    # 5 in each of the 3 blocks, adaLN in the 2 modulated ones, 6 in the embedders and the final layer
    assert len(matrices) == 23, sorted(matrices)
    unmapped = sorted(matrices - set(detected["targets"]))
    assert not unmapped, unmapped
    del state
    gc.collect()
