"""The plain flow-matching LoRA script for a diffusion transformer: diffusers pipeline parts + peft LoRA, fp32.

The shape of diffusers' train_dreambooth_lora_flux.py, without its caching options: load the pipeline from a
diffusers folder, add a peft LoRA adapter to the transformer, and every step encode the images with the VAE and
the captions with the text encoder(s), draw sigmas (`sigmoid`: diffusers' `logit_normal` density with mean 0,
std 1, looked up in `FlowMatchEulerDiscreteScheduler`'s sigmas as that script does), mix (1 - σ)·x + σ·ε,
predict, MSE against ε - x, AdamW. Nothing cached, nothing in bf16.

    python -m bench.reference_dit --family flux1 --model DIR --data DIR --resolution 64 --batch 2 --rank 8 \
        --steps 20 --lr 1e-4 --events events.jsonl

A family plugs in with one `Adapter` in `ADAPTERS`: which pipeline class loads the folder, the LoRA target
layers (the layers lora-scripts' default trains, as diffusers names them), the prompt encoding and the
transformer call.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .reference_loop import arg_parser, run_loop


class Adapter(Protocol):
    """What differs between diffusion-transformer pipelines in the loop below."""

    def load(self, folder: str, device: torch.device) -> Any: ...  # the pipeline, fp32, frozen
    def lora_targets(self) -> str: ...  # peft target_modules (a full-name regex)
    def encode(self, pipe: Any, captions: list[str], text_length: int) -> dict[str, torch.Tensor]: ...
    def predict(self, pipe: Any, noisy: torch.Tensor, sigmas: torch.Tensor, cond: dict) -> torch.Tensor: ...


class Flux1:
    """FLUX.1 (FluxPipeline). q/k/v are fused with diffusers' own `fuse_qkv_projections`, so the adapter sits on
    the layers kohya's file names (`img_attn.qkv`, `linear1` = q/k/v + proj_mlp ...), as lora-scripts trains
    them; the modulation layers are left out, as kohya does."""

    def load(self, folder: str, device: torch.device) -> Any:
        from diffusers import FluxPipeline

        pipe = FluxPipeline.from_pretrained(folder, torch_dtype=torch.float32).to(device)
        for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
            part.requires_grad_(False)
        pipe.transformer.fuse_qkv_projections()
        return pipe

    def lora_targets(self) -> str:
        double = r"attn\.(to_qkv|to_added_qkv|to_out\.0|to_add_out)|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)"
        single = r"attn\.to_qkv|proj_mlp|proj_out"
        return rf"^(transformer_blocks\.\d+\.({double})|single_transformer_blocks\.\d+\.({single}))$"

    def encode(self, pipe: Any, captions: list[str], text_length: int) -> dict[str, torch.Tensor]:
        hidden, pooled, text_ids = pipe.encode_prompt(
            captions, prompt_2=None, max_sequence_length=text_length
        )
        return {"hidden": hidden, "pooled": pooled, "text_ids": text_ids}

    def predict(self, pipe: Any, noisy: torch.Tensor, sigmas: torch.Tensor, cond: dict) -> torch.Tensor:
        b, c, h, w = noisy.shape
        packed = pipe._pack_latents(noisy, b, c, h, w)
        img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, noisy.dtype)
        guidance = None
        if pipe.transformer.config.guidance_embeds:  # dev: the distilled guidance input, 1.0 as recipes train
            guidance = torch.ones(b, device=noisy.device)
        out = pipe.transformer(
            hidden_states=packed,
            timestep=sigmas,  # what FluxPipeline passes: timestep / 1000
            guidance=guidance,
            pooled_projections=cond["pooled"],
            encoder_hidden_states=cond["hidden"],
            txt_ids=cond["text_ids"],
            img_ids=img_ids,
        ).sample
        return pipe._unpack_latents(
            out, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor, pipe.vae_scale_factor
        )


class ZImage:
    """Z-Image (ZImagePipeline). diffusers keeps q, k and v as three Linears, as lora-scripts trains them (its file
    fuses them into `attention.qkv`), so the adapter sits on the layers our default trains: attention q/k/v/out
    and the feed-forward w1/w2/w3 of the main layers and both refiners; the modulation (adaLN) layers are left
    out, as our default does. The transformer takes 1 - σ and predicts x - ε (the pipeline negates it)."""

    def load(self, folder: str, device: torch.device) -> Any:
        from diffusers import ZImagePipeline

        pipe = ZImagePipeline.from_pretrained(folder, torch_dtype=torch.float32).to(device)
        for part in (pipe.transformer, pipe.vae, pipe.text_encoder):
            part.requires_grad_(False)
        return pipe

    def lora_targets(self) -> str:
        return r"^(layers|noise_refiner|context_refiner)\.\d+\.(attention\.(to_q|to_k|to_v|to_out\.0)|feed_forward\.w[123])$"

    def encode(self, pipe: Any, captions: list[str], text_length: int) -> dict[str, Any]:
        # Qwen3's second-to-last hidden states of each caption's own tokens (a list: lengths differ)
        features, _ = pipe.encode_prompt(
            captions, do_classifier_free_guidance=False, max_sequence_length=text_length
        )
        return {"features": features}

    def predict(self, pipe: Any, noisy: torch.Tensor, sigmas: torch.Tensor, cond: dict) -> torch.Tensor:
        latents = list(noisy.unsqueeze(2).unbind(dim=0))  # (channels, frames = 1, h, w) each
        out = pipe.transformer(latents, 1 - sigmas, cond["features"], return_dict=False)[0]
        return -torch.stack(out).squeeze(2)


ADAPTERS: dict[str, Adapter] = {"flux1": Flux1(), "zimage": ZImage()}


def flow_matching_loss(
    adapter: Adapter, pipe: Any, scheduler: Any, pixels: torch.Tensor, captions: list[str], text_length: int
) -> torch.Tensor:
    """VAE and text encoders on this batch, then one flow-matching prediction and its MSE."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    vae = pipe.vae
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample()
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        cond = adapter.encode(pipe, captions, text_length)
    noise = torch.randn_like(latents)
    u = compute_density_for_timestep_sampling("logit_normal", latents.shape[0], logit_mean=0.0, logit_std=1.0)
    indices = (u * scheduler.config.num_train_timesteps).long()
    sigmas = scheduler.sigmas[indices].to(latents.device)
    s = sigmas.view(-1, 1, 1, 1)
    pred = adapter.predict(pipe, (1 - s) * latents + s * noise, sigmas, cond)
    return F.mse_loss(pred.float(), (noise - latents).float())


def main() -> None:
    ap = arg_parser()
    ap.add_argument("--family", required=True, choices=sorted(ADAPTERS))
    ap.add_argument("--text-length", type=int, default=512, help="tokens of the (longest) text encoder")
    args: argparse.Namespace = ap.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    adapter = ADAPTERS[args.family]
    pipe = adapter.load(str(args.model), device)
    from diffusers import FlowMatchEulerDiscreteScheduler
    from peft import LoraConfig

    # the training copy of the schedule, as diffusers' script keeps one: static shift, 1000 sigmas
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    config = LoraConfig(
        r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=adapter.lora_targets()
    )
    pipe.transformer.add_adapter(config)
    params = [p for p in pipe.transformer.parameters() if p.requires_grad]
    run_loop(
        args,
        pipe.transformer,
        params,
        lambda px, caps: flow_matching_loss(adapter, pipe, scheduler, px, caps, args.text_length),
    )


if __name__ == "__main__":
    main()
