"""Text from a base causal LM plus a trained adapter, chat-formatted the way training formatted it."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .data import chat_template


def generate_text(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    system: str = "",
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    template: str | None = None,
) -> str:
    """The assistant's reply to `prompt` (greedy when temperature is 0)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            messages,
            chat_template=chat_template(tokenizer, template),
            tokenize=False,
            add_generation_prompt=True,
        )
    except TemplateError as exc:  # the model's template is a program of its own: its refusal is the input's
        roles = "/".join(m["role"] for m in messages)
        raise ConfigError(
            f"the chat template refused this prompt ({roles}): {str(exc)[:200]}. "
            + (
                "Leave --system empty (this template takes no system message) or pass --chat-template chatml."
                if system
                else "Pass --chat-template chatml."
            )
        ) from None
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    torch.manual_seed(seed)
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p}
        if temperature > 0
        else {"do_sample": False}
    )
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
