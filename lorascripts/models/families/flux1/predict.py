"""One FLUX.1 transformer call in the latent layout: 2x2 packing, image/text position ids, guidance embedding."""

from __future__ import annotations

from typing import Any

import torch

from ...attention import dit_attention
from ...rotary_cache import cache_rotary


def predict(
    transformer: Any,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    conditioning: dict[str, torch.Tensor],
    guidance_scale: float,
) -> torch.Tensor:
    """The velocity prediction for (batch, 16, h, w) latents, in the same layout.

    `timesteps` are sigmas in (0, 1): the transformer takes what FluxPipeline passes (timestep / 1000).
    Dev models embed the distilled guidance value (training recipes use 1.0); schnell has no guidance input.
    """
    from diffusers import FluxPipeline

    dtype = transformer.dtype
    cache_rotary(transformer)  # the same ids every step of a bucket
    b, c, h, w = noisy.shape
    packed = FluxPipeline._pack_latents(noisy.to(dtype), b, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, dtype)
    hidden = conditioning["hidden"].to(noisy.device, dtype)
    txt_ids = torch.zeros(hidden.shape[1], 3, device=noisy.device, dtype=dtype)
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = torch.full((b,), guidance_scale, device=noisy.device, dtype=torch.float32)
    tokens = packed.shape[1] + hidden.shape[1]  # image and text tokens attend together
    with dit_attention(
        noisy.device,
        dtype,
        b,
        transformer.config.num_attention_heads,
        tokens,
        transformer.is_gradient_checkpointing,
    ):
        out = transformer(
            hidden_states=packed,
            timestep=timesteps.to(noisy.device, dtype),
            guidance=guidance,
            pooled_projections=conditioning["pooled"].to(noisy.device, dtype),
            encoder_hidden_states=hidden,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
    # vae_scale_factor 1: h and w are already latent sizes
    return FluxPipeline._unpack_latents(out, h, w, 1)
