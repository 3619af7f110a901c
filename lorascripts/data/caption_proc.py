"""Caption processing per training step: trigger word, tag shuffling with kept tokens, dropout."""

from __future__ import annotations

import random


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def with_trigger(caption: str, trigger_word: str) -> str:
    """Prepend the trigger word unless the caption already contains it as a tag or word."""
    if not trigger_word:
        return caption
    if trigger_word in split_tags(caption) or f" {trigger_word} " in f" {caption.replace(',', ' ')} ":
        return caption
    return f"{trigger_word}, {caption}" if caption else trigger_word


def process_caption(
    caption: str,
    *,
    trigger_word: str = "",
    shuffle: bool = False,
    keep_tokens: int = 0,
    caption_dropout_rate: float = 0.0,
    tag_dropout_rate: float = 0.0,
    rng: random.Random | None = None,
) -> str:
    """The caption one step trains with. The trigger word is never dropped or moved when shuffling."""
    rng = rng or random.Random(0)
    caption = with_trigger(caption, trigger_word)
    if caption_dropout_rate and rng.random() < caption_dropout_rate:
        return trigger_word
    if not (shuffle or tag_dropout_rate):
        return caption
    tags = split_tags(caption)
    keep = max(keep_tokens, 1 if trigger_word and tags and tags[0] == trigger_word else 0)
    fixed, rest = tags[:keep], tags[keep:]
    if tag_dropout_rate:
        rest = [t for t in rest if rng.random() >= tag_dropout_rate]
    if shuffle:
        rng.shuffle(rest)
    return ", ".join(fixed + rest)
