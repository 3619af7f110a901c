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
from pathlib import Path

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


def main() -> None:
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
    args = ap.parse_args()

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(args.seed)
    emit = Emitter(args.events)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(
        args.model, subfolder="text_encoder", torch_dtype=torch.float32
    )
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=torch.float32)
    scheduler = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
        module.to(device)
    unet.add_adapter(
        LoraConfig(
            r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES
        )
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    pixels, captions = load_images(args.data, args.resolution)
    lora_layers = sum(1 for name, _ in unet.named_modules() if name.endswith(".lora_A"))
    emit("started", modules=lora_layers, params=sum(p.numel() for p in params), device=device.type)

    unet.train()
    order: list[int] = []
    rng = random.Random(args.seed)
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:  # a fresh shuffle each epoch
            order = list(range(len(pixels)))
            rng.shuffle(order)
        batch, order = order[: args.batch], order[args.batch :]
        with torch.no_grad():
            latents = vae.encode(pixels[batch].to(device)).latent_dist.sample() * vae.config.scaling_factor
            ids = tokenizer(
                [captions[i] for i in batch],
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
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        emit("step", step=step, loss=loss.item())
    vram = torch.cuda.max_memory_reserved() if device.type == "cuda" else None
    emit("finished", steps=args.steps, peak_vram_bytes=vram)


if __name__ == "__main__":
    main()
