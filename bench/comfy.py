"""Contender "comfyui": ComfyUI 0.3.75's native TrainLoraNode in the real ComfyUI the test suite installs.

A fresh server per run (so its VmHWM is this run's peak), the workload's checkpoint and pictures in its folders,
and the closest workflow to the other contenders: CheckpointLoaderSimple -> LoadImageDataSetFromFolder ->
VAEEncode (latents computed once, like a latent cache) + one CLIPTextEncode of the shared caption ->
TrainLoraNode (bf16 training, fp32 LoRA weights like ours, same rank / batch / steps / learning rate, AdamW,
MSE, no gradient checkpointing, which ours does not use either) -> SaveLoRA. Step times are the arrival times
of the node's `progress` websocket messages (one per optimizer step).

What cannot be matched: TrainLoraNode adapts every Linear/Conv of the U-Net (plus bias/norm offsets) with
alpha 1, not kohya's transformer-block set; its timestep sampling and loss are its own; it runs on the CPU only
here (tests/comfy_host.py starts it with --cpu). Start-up is measured from queueing the prompt on a running,
idle server (how ComfyUI is used); the server's own start time is recorded beside it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from .measure import RunResult, vm_hwm
from .workloads import CAPTION, Workload, checkpoint_file, comfy_host, image_set

TRAIN_NODE = "5"


def workflow(w: Workload, ckpt_name: str, folder: str, seed: int = 0) -> dict[str, Any]:
    """The API-format prompt: checkpoint, images -> latents, one caption, TrainLoraNode, SaveLoRA."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": folder}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": CAPTION, "clip": ["1", 1]}},
        TRAIN_NODE: {
            "class_type": "TrainLoraNode",
            "inputs": {
                "model": ["1", 0],
                "latents": ["3", 0],
                "positive": ["4", 0],
                "batch_size": w.batch,
                "grad_accumulation_steps": 1,
                "steps": w.comfy_steps,
                "learning_rate": w.learning_rate,
                "rank": w.rank,
                "optimizer": "AdamW",
                "loss_function": "MSE",
                "seed": seed,
                "training_dtype": "bf16",
                "lora_dtype": "fp32",
                "algorithm": "LoRA",
                "gradient_checkpointing": False,
                "existing_lora": "[None]",
            },
        },
        "6": {
            "class_type": "SaveLoRA",
            "inputs": {"lora": [TRAIN_NODE, 1], "prefix": "loras/bench", "steps": [TRAIN_NODE, 3]},
        },
    }


def _prepare(w: Workload, base: Path) -> tuple[str, str]:
    """Checkpoint linked into models/checkpoints, the pictures copied into input/<folder>."""
    ckpt = checkpoint_file(w.model)
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    link = checkpoints / ckpt.name
    if not link.exists():
        link.symlink_to(ckpt)
    folder = f"bench_{w.resolution}"
    target = base / "input" / folder
    target.mkdir(parents=True, exist_ok=True)
    for image in sorted(image_set(w.resolution).glob("*.png")):
        shutil.copy2(image, target / image.name)
    return ckpt.name, folder


def run_comfy(w: Workload, work: Path, timeout: float = 1800) -> RunResult:
    """Start a server, queue the training prompt, follow its progress, read the server's peak memory, stop."""
    base = work / "comfy"
    ckpt_name, folder = _prepare(w, base)
    host = comfy_host()
    server_launch = time.time()
    server = host.ComfyServer(base)
    server_ready = time.time()
    progress = host.WebsocketLog(server.port, server.client_id)
    result = RunResult("comfyui", w.name, 0.0, [], w.batch, w.warmup, dtype="bf16")
    try:
        result.launched_at = time.time()
        prompt_id = server.queue(workflow(w, ckpt_name, folder))
        entry = server.wait(prompt_id, timeout=timeout)
        time.sleep(0.5)  # the last progress frame may still be in flight
        result.step_times = progress.steps(TRAIN_NODE)
        result.peak_rss_bytes = vm_hwm(server.process.pid)
        result.extra = {"server_start_s": server_ready - server_launch}
        status = entry.get("status", {})
        if status.get("status_str") != "success" or len(result.step_times) < w.comfy_steps:
            messages = [m for m in status.get("messages", []) if m[0] == "execution_error"]
            detail = messages[0][1].get("exception_message", "") if messages else server.server_log()[-2000:]
            result.error = f"ComfyUI prompt {status.get('status_str')}: {detail.strip()}"
    finally:
        progress.close()
        server.stop()
    return result
