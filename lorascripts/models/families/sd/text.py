"""Text conditioning exactly as the generating apps compute it, so a LoRA trains on what it will see.

SD1: last hidden state after the final LayerNorm (clip_skip N: the N-th layer from the end, then LayerNorm).
SD2: same on the 23-layer OpenCLIP encoder (the 24th block is already dropped, i.e. penultimate conditioning).
SDXL: penultimate hidden states of both encoders, concatenated, plus te2's projected pooled output.
"""

from __future__ import annotations

from typing import Any

import torch


def tokenize(base: Any, captions: list[str]) -> list[torch.Tensor]:
    """Token ids (batch, 77) for each tokenizer of the model."""
    out = []
    for tokenizer in base.tokenizers:
        ids = tokenizer(
            captions,
            padding="max_length",
            max_length=tokenizer.model_max_length,  # the loader clamps it to the encoder's window
            truncation=True,
            return_tensors="pt",
        ).input_ids
        out.append(ids)
    return out


def encode_tokens(
    base: Any, ids_list: list[torch.Tensor], clip_skip: int = 1
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden states for cross-attention, pooled embedding for SDXL or None)."""
    encoders = base.text_encoders
    if len(encoders) == 1:
        te = encoders[0]
        if clip_skip <= 1:
            return te(ids_list[0], output_hidden_states=False).last_hidden_state, None
        hidden = te(ids_list[0], output_hidden_states=True).hidden_states[-clip_skip]
        return _final_norm(te)(hidden), None
    states = []
    pooled = None
    for te, ids in zip(encoders, ids_list):
        out = te(ids, output_hidden_states=True)
        states.append(out.hidden_states[-(clip_skip + 1)])
        if hasattr(out, "text_embeds"):
            pooled = out.text_embeds
    return torch.cat(states, dim=-1), pooled


def _final_norm(te: Any) -> torch.nn.Module:
    inner = getattr(te, "text_model", te)
    return inner.final_layer_norm
