"""Pretrain the built-in FLUX toy model: a tiny FLUX.1-architecture transformer on the SD toy's world.

    python -m lorascripts.toy.flux_pretrain --out lorascripts/toy/flux

Built from the SD toy (`lorascripts/toy/model`) so nothing but the transformer has to learn from scratch:
- the VAE is the SD toy's (4 latent channels, factor 8), moved into FLUX's latent normalisation: its quant convs
  take an exact affine map so that `(z − 0.1159) · 0.3611` (the constants the FLUX loader gives every `ae` file)
  has zero mean and unit std over the toy world;
- CLIP-L is the SD toy's text encoder and tokenizer (its pooled output is FLUX's global vector);
- T5 is a tiny T5 encoder with a Unigram tokenizer learned on the captions;
- the transformer (FluxTransformer2DModel, 2 double + 2 single blocks, 2 heads of 32, no guidance embedding:
  schnell-shaped) learns jointly with T5 and CLIP by the engine's own FLUX objective and prediction (rectified
  flow, sigmoid-drawn sigmas), 10% empty captions so that true classifier-free guidance works.
Deterministic for a given thread count (fixed seeds and step counts). Saved as users have FLUX: BFL's
single-file transformer with `ae`, `clip_l`, `t5xxl` files and tokenizer folders beside it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data.transforms import image_to_tensor
from ..models.families.flux1.layout import FLUX_VAE_SCALE, FLUX_VAE_SHIFT
from ..models.families.sd.single_file import ARCH_KEY
from ..models.tokenizer_build import train_t5_tokenizer
from . import TOY_FLUX_DIR, TOY_FLUX_FILE, TOY_MODEL_DIR
from .pretrain import (
    SIZE,
    draw_batch,
    fit,
    pretrain_parser,
    scene_latents,
    start_logging_and_seed,
    tokenizer_texts,
)
from .scenes import all_scenes

logger = logging.getLogger(__name__)
T5_LENGTH = (
    32  # the longest toy caption is 17 T5 tokens; FLUX has no text mask, so training and sampling agree
)
ARCH = {"guidance": "cfg", "text_max_length": T5_LENGTH}
__all__ = ["ARCH", "T5_LENGTH", "flux_normalised_vae", "main"]


def flux_normalised_vae(vae: Any) -> Any:
    """The SD toy VAE with latents `z' = a·z + b` chosen so FLUX's fixed normalisation makes them standard.

    Exact: the encoder's quant conv (mean rows) is scaled and shifted, its log-variance rows move by 2·ln a, and
    the decoder's post-quant conv undoes the map before anything else sees it.
    """
    with torch.no_grad():
        pixels = torch.stack([image_to_tensor(img) for img, _ in all_scenes(SIZE)])
        means = torch.cat(
            [vae.encode(pixels[i : i + 64]).latent_dist.mean for i in range(0, len(pixels), 64)]
        )
        mean, std = means.mean().item(), means.std().item()
        a = 1.0 / (FLUX_VAE_SCALE * std)
        b = FLUX_VAE_SHIFT - a * mean
        channels = vae.config.latent_channels
        quant, post = vae.quant_conv, vae.post_quant_conv
        quant.weight[:channels] *= a
        quant.bias[:channels] = quant.bias[:channels] * a + b
        quant.bias[channels:] += 2 * math.log(a)
        post.bias -= post.weight[:, :, 0, 0].sum(dim=1) * b / a
        post.weight /= a
    vae.register_to_config(scaling_factor=FLUX_VAE_SCALE, shift_factor=FLUX_VAE_SHIFT)
    logger.info("VAE latents: mean %.4f std %.4f -> map a=%.4f b=%.4f", mean, std, a, b)
    return vae


def build_parts(t5_tokenizer: Any) -> dict[str, Any]:
    """The SD toy's VAE (FLUX-normalised), CLIP and tokenizer; a new T5 encoder and transformer."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    vae = AutoencoderKL.from_pretrained(str(TOY_MODEL_DIR), subfolder="vae", torch_dtype=torch.float32)
    clip = CLIPTextModel.from_pretrained(str(TOY_MODEL_DIR), subfolder="text_encoder", dtype=torch.float32)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer), d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
            feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
        )
    )  # fmt: skip
    latent = vae.config.latent_channels
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent, out_channels=4 * latent, num_layers=2, num_single_layers=2,
        attention_head_dim=32, num_attention_heads=2, joint_attention_dim=t5.config.d_model,
        pooled_projection_dim=clip.config.hidden_size, guidance_embeds=False, axes_dims_rope=(4, 14, 14),
    )  # fmt: skip
    return {
        "vae": flux_normalised_vae(vae.eval()),
        "clip_l": clip,
        "t5": t5,
        "transformer": transformer,
        "clip_tokenizer": CLIPTokenizer.from_pretrained(str(TOY_MODEL_DIR / "tokenizer")),
        "t5_tokenizer": t5_tokenizer,
    }


def flux_base(parts: dict[str, Any]) -> Any:
    """The parts as a FLUX.1 BaseModel, so that pretraining runs the engine's own objective and prediction."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..models.families import BaseModel, get_family
    from ..models.families.flux1.load import SCHNELL_SCHEDULER

    return BaseModel(
        get_family("flux1"),
        parts["transformer"],
        parts["vae"],
        [parts["clip_l"], parts["t5"]],
        [parts["clip_tokenizer"], parts["t5_tokenizer"]],
        FlowMatchEulerDiscreteScheduler(**SCHNELL_SCHEDULER),
        "flow",
        "toy-flux",
        "toy-flux",
        SIZE,
        extra={"metadata": {ARCH_KEY: json.dumps(ARCH)}},
    )


def train_transformer(base: Any, steps: int, batch: int, seed: int) -> None:
    from ..models.families.flow_matching import FlowMatchingObjective, FlowSettings

    rng = random.Random(seed)
    torch.manual_seed(seed)
    family = base.family
    means, stds, texts = scene_latents(base.vae)
    scale, shift = family.latent_scale_shift(base.vae)
    objective = FlowMatchingObjective(FlowSettings(timestep_sampling="sigmoid"))

    def step_loss(step: int) -> torch.Tensor:
        pick, captions = draw_batch(rng, texts, batch)
        encoded = means[pick] + stds[pick] * torch.randn_like(means[pick])
        latents = (encoded - shift) * scale
        drawn = objective.draw(tuple(latents.shape), seed * 100_000 + step, 0.0)
        noisy, target = objective.noisy_input(latents, drawn.noise, drawn.timesteps)
        conditioning = family.encode_tokens(base, family.tokenize(base, captions), clip_skip=1)
        pred = family.predict(base, noisy, objective.model_timesteps(drawn.timesteps), conditioning)
        return F.mse_loss(pred.float(), target.float())

    fit([base.denoiser, *base.text_encoders], step_loss, steps, "transformer")


def save(parts: dict[str, Any], out: Path, card: dict[str, Any]) -> None:
    """BFL transformer (bf16, as BFL ships it) with `ae`, `clip_l`, `t5xxl` (fp16) and tokenizers beside it."""
    from safetensors.torch import save_file

    from ..models.families.flux1.save import ae_state, bfl_transformer_state, clip_l_state, t5_state

    def write(
        state: dict[str, torch.Tensor], name: str, dtype: torch.dtype, meta: dict | None = None
    ) -> None:
        save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(out / name), metadata=meta)

    out.mkdir(parents=True, exist_ok=True)
    write(
        bfl_transformer_state(parts["transformer"]),
        TOY_FLUX_FILE.name,
        torch.bfloat16,
        {ARCH_KEY: json.dumps(ARCH)},
    )
    write(ae_state(parts["vae"]), "ae.safetensors", torch.float16)
    write(clip_l_state(parts["clip_l"]), "clip_l.safetensors", torch.float16)
    write(t5_state(parts["t5"]), "t5xxl_fp16.safetensors", torch.float16)
    shutil.copytree(TOY_MODEL_DIR / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
    parts["t5_tokenizer"].save_pretrained(str(out / "t5_tokenizer"))
    (out / "training.json").write_text(json.dumps(card, indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    from transformers import T5TokenizerFast

    parser = pretrain_parser(__doc__, TOY_FLUX_DIR)
    parser.add_argument("--steps", type=int, default=2000)
    # one thread: the steps are per-operator overhead, and a busy machine makes threads wait on each other
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start_logging_and_seed(args.seed)
    work = args.out / "t5_tokenizer"
    t5_tokenizer = T5TokenizerFast.from_pretrained(str(train_t5_tokenizer(tokenizer_texts(args.seed), work)))
    parts = build_parts(t5_tokenizer)
    started = time.time()
    train_transformer(flux_base(parts), args.steps, args.batch, args.seed + 3)
    card = {
        "steps": args.steps,
        "batch": args.batch,
        "seed": args.seed,
        "seconds": round(time.time() - started),
        "threads": torch.get_num_threads(),
    }
    save(parts, args.out, card)
    logger.info("saved FLUX toy model to %s (%s)", args.out, card)


if __name__ == "__main__":
    main()
