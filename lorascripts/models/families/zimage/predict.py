"""One Z-Image transformer call in the latent layout, as ZImagePipeline makes it."""

from __future__ import annotations

from typing import Any

import torch

from ...attention import dit_attention


def caption_features(
    conditioning: dict[str, torch.Tensor], device: Any, dtype: torch.dtype
) -> list[torch.Tensor]:
    """The pipeline's `prompt_embeds`: per caption, the hidden states of its own tokens only."""
    hidden, mask = conditioning["hidden"], conditioning["mask"].bool()
    return [hidden[i][mask[i].to(hidden.device)].to(device, dtype) for i in range(hidden.shape[0])]


def predict(
    transformer: Any, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The velocity `ε − x` for (batch, 16, h, w) latents, in the same layout.

    `timesteps` are the model's (1 − σ, the objective's `model_timesteps`); the transformer takes a list of
    (channels, frames = 1, h, w) latents and caption features of any length, and predicts `x − ε`: the pipeline
    negates its output before the scheduler step (`noise_pred = -noise_pred`), and so does this.
    """
    dtype = transformer.dtype
    latents = list(noisy.to(dtype).unsqueeze(2).unbind(dim=0))
    features = caption_features(conditioning, noisy.device, dtype)
    # image and caption tokens attend together in the main layers (the kernel choice of models/attention.py)
    tokens = (noisy.shape[-2] // 2) * (noisy.shape[-1] // 2) + max(f.shape[0] for f in features)
    with dit_attention(
        noisy.device,
        dtype,
        noisy.shape[0],
        transformer.config.n_heads,
        tokens,
        transformer.is_gradient_checkpointing,
    ):
        out = transformer(latents, timesteps.to(noisy.device, torch.float32), features, return_dict=False)[0]
    return -torch.stack([o.float() for o in out]).squeeze(2).to(noisy.dtype)
