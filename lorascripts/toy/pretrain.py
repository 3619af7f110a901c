"""Pretrain the built-in toy model (tiny SD1-family latent diffusion) on procedural captioned pictures.

    python -m lorascripts.toy.pretrain --out lorascripts/toy/model

Deterministic for a given thread count (fixed seeds, fixed step counts); about 45 minutes on 2 CPU cores.
Stages: CLIP tokenizer (tokenizers BPE) -> VAE (reconstruction + small KL) -> U-Net and text encoder jointly
(epsilon prediction, 10% empty captions so classifier-free guidance works).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.transforms import image_to_tensor
from ..models.families.sd.objective import sd_noise_scheduler
from ..models.tokenizer_build import train_clip_tokenizer
from .scenes import all_scenes, augmented_scene, random_scene

logger = logging.getLogger(__name__)
SIZE = 64


def _vae_batch(rng: random.Random, n: int) -> torch.Tensor:
    return torch.stack([image_to_tensor(augmented_scene(rng, SIZE)) for _ in range(n)])


def build_components(vocab: int) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=SIZE,
    )
    unet = UNet2DConditionModel(
        sample_size=SIZE // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        norm_num_groups=16,
        block_out_channels=(32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=4,
    )
    te = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
        )
    )
    return {"vae": vae, "unet": unet, "text_encoder": te}


def train_vae(vae: torch.nn.Module, steps: int, batch: int, seed: int) -> float:
    """Reconstruction (MSE) + 1e-6 KL; returns the latent scaling factor (1 / latent std)."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    vae.train()
    for step in range(steps):
        pixels = _vae_batch(rng, batch)
        dist = vae.encode(pixels).latent_dist
        recon = vae.decode(dist.sample()).sample
        loss = F.mse_loss(recon, pixels) + 1e-6 * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            logger.info("vae step %d/%d loss %.5f", step, steps, loss.item())
    vae.eval()
    with torch.no_grad():
        pixels = torch.stack([image_to_tensor(img) for img, _ in all_scenes(SIZE)])
        std = vae.encode(pixels).latent_dist.mean.std().item()
    return 1.0 / std


def tokenizer_texts(seed: int) -> list[str]:
    """What the toy tokenizers learn their vocabulary from: captions of the toy world and the style words."""
    rng = random.Random(seed)
    return [random_scene(rng, 8)[1] for _ in range(3000)] + ["zkstyle style picture drawing photo"] * 20


def scene_latents(vae: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Latent means and stds of every toy-world scene, and their captions: the toy world has under a thousand
    distinct pictures, so each is encoded once and a latent is sampled from its distribution every step."""
    scenes = all_scenes(SIZE)
    with torch.no_grad():
        dists = [
            vae.encode(torch.stack([image_to_tensor(img) for img, _ in scenes[i : i + 64]])).latent_dist
            for i in range(0, len(scenes), 64)
        ]
    return torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists]), [c for _, c in scenes]


def draw_batch(rng: random.Random, texts: list[str], batch: int) -> tuple[list[int], list[str]]:
    """`batch` scene indices and their captions, 10% of them empty so that classifier-free guidance works."""
    pick = [rng.randrange(len(texts)) for _ in range(batch)]
    return pick, ["" if rng.random() < 0.1 else texts[i] for i in pick]


def fit(
    modules: list[torch.nn.Module], step_loss: Callable[[int], torch.Tensor], steps: int, label: str
) -> None:
    """AdamW 1e-3 with 200 warm-up steps and linear decay to 10%, gradients clipped at 1: the toy recipe."""
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200) * max(0.1, 1 - s / steps))
    for module in modules:
        module.train()
    started = time.time()
    for step in range(steps):
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr.step()
        if step % 200 == 0 or step == steps - 1:
            rate = (step + 1) / (time.time() - started)
            logger.info("%s step %d/%d loss %.4f (%.2f step/s)", label, step, steps, loss.item(), rate)
    for module in modules:
        module.eval()


def train_unet(parts: dict, tokenizer, steps: int, batch: int, seed: int) -> None:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    vae, unet, te = parts["vae"], parts["unet"], parts["text_encoder"]
    means, stds, texts = scene_latents(vae)
    scheduler = sd_noise_scheduler()

    def step_loss(step: int) -> torch.Tensor:
        pick, captions = draw_batch(rng, texts, batch)
        latents = (means[pick] + stds[pick] * torch.randn_like(means[pick])) * vae.config.scaling_factor
        ids = tokenizer(
            captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,))
        noisy = scheduler.add_noise(latents, noise, t)
        return F.mse_loss(unet(noisy, t, te(ids).last_hidden_state).sample, noise)

    fit([unet, te], step_loss, steps, "unet")


def save(parts: dict, tokenizer, out: Path, card: dict) -> None:
    """diffusers folder (fp16 weights) + the same model as a single-file original-layout checkpoint."""
    from diffusers import StableDiffusionPipeline

    from ..models.families import BaseModel, get_family
    from ..models.families.sd.ldm_names import save_single_file
    from ..models.families.sd.single_file import ARCH_KEY

    scheduler = sd_noise_scheduler()
    half = {k: v.to(torch.float16) for k, v in parts.items()}
    pipe = StableDiffusionPipeline(
        vae=half["vae"],
        text_encoder=half["text_encoder"],
        tokenizer=tokenizer,
        unet=half["unet"],
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out))
    base = BaseModel(
        get_family("sd1"),
        half["unet"],
        half["vae"],
        [half["text_encoder"]],
        [tokenizer],
        scheduler,
        "epsilon",
        "",
        "toy",
        SIZE,
    )
    arch = {
        "unet_heads": 4,
        "unet_groups": 16,
        "vae_groups": 8,
        "text_heads": [2, 2],
        "sample_size": SIZE // 8,
        "scaling_factor": parts["vae"].config.scaling_factor,
    }
    save_single_file(base, out / "toy-sd1.safetensors", metadata={ARCH_KEY: json.dumps(arch)})
    (out / "training.json").write_text(json.dumps(card, indent=2), encoding="utf-8")


def pretrain_parser(description: str, out: Path | None = None) -> argparse.ArgumentParser:
    """The options every toy pretraining command has: --out (required without a default), --batch, --seed."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=out is None, default=out)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def start_logging_and_seed(seed: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(seed)


def main(argv: list[str] | None = None) -> None:
    parser = pretrain_parser(__doc__)
    parser.add_argument("--vae-steps", type=int, default=500)
    parser.add_argument("--unet-steps", type=int, default=4000)
    args = parser.parse_args(argv)
    start_logging_and_seed(args.seed)
    from transformers import CLIPTokenizer

    tok_dir = train_clip_tokenizer(tokenizer_texts(args.seed), args.out / "tokenizer", vocab_size=560)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    parts = build_components(len(tokenizer))
    started = time.time()
    scaling = train_vae(parts["vae"], args.vae_steps, args.batch, args.seed + 1)
    parts["vae"].register_to_config(scaling_factor=round(scaling, 5))
    logger.info("vae done in %.0fs, scaling factor %.5f", time.time() - started, scaling)
    train_unet(parts, tokenizer, args.unet_steps, args.batch, args.seed + 2)
    card = {
        "vae_steps": args.vae_steps,
        "unet_steps": args.unet_steps,
        "batch": args.batch,
        "seed": args.seed,
        "seconds": round(time.time() - started),
        "threads": torch.get_num_threads(),
    }
    save(parts, tokenizer, args.out, card)
    logger.info("saved toy model to %s (%s)", args.out, card)


if __name__ == "__main__":
    main()
