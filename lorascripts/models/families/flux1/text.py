"""FLUX.1 text conditioning as FluxPipeline computes it: T5's last hidden states (the token sequence) and
CLIP-L's pooled output (the global vector), both cacheable per caption."""

from __future__ import annotations

from typing import Any

import torch

CLIP_LENGTH = 77


def tokenize(base: Any, captions: list[str], t5_length: int) -> list[torch.Tensor]:
    """[CLIP-L ids (batch, 77), T5 ids (batch, t5_length)], padded to their full length as the pipeline does."""
    clip, t5 = base.tokenizers
    clip_ids = clip(
        captions, padding="max_length", max_length=CLIP_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids
    t5_ids = t5(
        captions, padding="max_length", max_length=t5_length, truncation=True, return_tensors="pt"
    ).input_ids
    return [clip_ids, t5_ids]


def encode_tokens(base: Any, ids: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """{"hidden": T5 states (batch, length, 4096), "pooled": CLIP-L pooled output (batch, 768)}."""
    clip, t5 = base.text_encoders
    pooled = clip(ids[0].to(clip.device), output_hidden_states=False).pooler_output
    hidden = t5(ids[1].to(t5.device), output_hidden_states=False).last_hidden_state
    return {"hidden": hidden, "pooled": pooled}
