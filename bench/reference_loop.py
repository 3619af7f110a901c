"""The straightforward LoRA training script most people start from: diffusers U-Net + peft LoRA, fp32.

This is what a typical script does (the shape of diffusers' train_text_to_image_lora.py): load the pipeline's
parts from a diffusers folder, add a peft LoRA adapter to the U-Net, and every step encode the images with the
VAE and the captions with the text encoder, add noise, predict it, MSE, AdamW. Nothing is cached, nothing is in
bf16. The LoRA covers the same layers as lora-scripts' default (kohya's set: every Linear / 1x1 conv inside the
U-Net's transformer blocks) with the same rank and alpha.

    python bench/reference_loop.py --model DIR --data DIR --resolution 64 --batch 4 --rank 8 --steps 20 \
        --lr 1e-4 --events events.jsonl

Writes `started` and one `step` event per step (JSON lines with a wall-clock `time`), like lora-scripts.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# kohya's default U-Net set, spelled as diffusers module names (peft matches them as name suffixes)
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


def load_images(folder: Path, resolution: int) -> tuple[torch.Tensor, list[str]]:
    """Pixels in [-1, 1] (N, 3, H, W) and captions from metadata.csv (file_name,caption)."""
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    pixels, captions = [], []
    for row in rows:
        image = Image.open(folder / row["file_name"]).convert("RGB").resize((resolution, resolution))
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        pixels.append(torch.from_numpy(array).permute(2, 0, 1))
        captions.append(row["caption"])
    return torch.stack(pixels), captions


class Emitter:
    """JSON lines with a wall-clock time, appended and flushed as they happen."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run

    def __call__(self, event: str, **data: object) -> None:
        self.fh.write(json.dumps({"event": event, "time": time.time(), **data}) + "\n")
        self.fh.flush()


class Parts(NamedTuple):
    """The pipeline's parts a training step uses."""

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    scheduler: Any


def arg_parser() -> argparse.ArgumentParser:
    """The options every reference loop takes (bench/reference.py passes them)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--events", required=True, type=Path)
    return ap


def load_parts(model: Path, device: torch.device) -> Parts:
    """Tokenizer, text encoder, VAE, U-Net and noise schedule from a diffusers folder, frozen, fp32."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=torch.float32)
    scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
        module.to(device)
    return Parts(tokenizer, text_encoder, vae, unet, scheduler)


def add_lora(unet: Any, rank: int) -> list[torch.nn.Parameter]:
    """A peft LoRA adapter on the U-Net; returns its trainable parameters."""
    from peft import LoraConfig

    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES)
    )
    return [p for p in unet.parameters() if p.requires_grad]


def batches(count: int, batch: int, steps: int, seed: int) -> Iterator[list[int]]:
    """Image indices of each step, a fresh shuffle each epoch."""
    order: list[int] = []
    rng = random.Random(seed)
    for _ in range(steps):
        if len(order) < batch:
            order = list(range(count))
            rng.shuffle(order)
        yield order[:batch]
        order = order[batch:]


def sd_loss(parts: Parts, pixels: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Encode images and captions, add noise, predict it, MSE."""
    tokenizer, text_encoder, vae, unet, scheduler = parts
    device = pixels.device
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        ids = tokenizer(
            captions,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        hidden = text_encoder(ids)[0]
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, hidden).sample
    return F.mse_loss(pred.float(), noise.float())


def run_loop(
    args: argparse.Namespace,
    denoiser: torch.nn.Module,
    params: list[torch.nn.Parameter],
    loss_of: Callable[[torch.Tensor, list[str]], torch.Tensor],
) -> None:
    """The training loop every reference shares: AdamW, clip at 1.0, a `step` event per step."""
    emit = Emitter(args.events)
    device = next(denoiser.parameters()).device
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    pixels, captions = load_images(args.data, args.resolution)
    lora_layers = sum(1 for name, _ in denoiser.named_modules() if name.endswith(".lora_A"))
    emit("started", modules=lora_layers, params=sum(p.numel() for p in params), device=device.type)
    denoiser.train()
    for step, batch in enumerate(batches(len(pixels), args.batch, args.steps, args.seed), start=1):
        loss = loss_of(pixels[batch].to(device), [captions[i] for i in batch])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        emit("step", step=step, loss=loss.item())
    vram = torch.cuda.max_memory_reserved() if device.type == "cuda" else None
    emit("finished", steps=args.steps, peak_vram_bytes=vram)


def main() -> None:
    args = arg_parser().parse_args()
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = load_parts(args.model, device)
    params = add_lora(parts.unet, args.rank)
    run_loop(args, parts.unet, params, lambda pixels, captions: sd_loss(parts, pixels, captions))


if __name__ == "__main__":
    main()
