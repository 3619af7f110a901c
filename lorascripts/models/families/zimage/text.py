"""Z-Image text conditioning as ZImagePipeline computes it: each caption in Qwen3's chat template (one user turn
and the generation prompt), padded to a fixed length, and the encoder's second-to-last hidden states; the
transformer then takes only the caption's own tokens (the attention mask), a sequence of its own length each.

Cached per caption, the states keep the fixed padded length and the mask rides with them, so captions of any
length stack into one batch (the pipeline's `prompt_embeds` list is the masked rows, rebuilt in predict.py).
"""

from __future__ import annotations

from typing import Any

import torch


def tokenize(base: Any, captions: list[str], max_length: int) -> list[torch.Tensor]:
    """[token ids (batch, max_length), attention mask (batch, max_length)]: both go to `encode_tokens`."""
    tokenizer = base.tokenizers[0]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": caption}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=True,
        )
        for caption in captions
    ]
    batch = tokenizer(
        prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    )
    return [batch.input_ids, batch.attention_mask]


def encode_tokens(base: Any, ids: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """{"hidden": hidden_states[-2] (batch, length, width), "mask": the caption's tokens (batch, length)}."""
    encoder = base.text_encoders[0]
    input_ids, mask = (t.to(encoder.device) for t in ids)
    out = encoder(input_ids=input_ids, attention_mask=mask.bool(), output_hidden_states=True)
    return {"hidden": out.hidden_states[-2], "mask": mask.bool()}
