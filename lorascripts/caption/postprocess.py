"""Caption post-processing shared by every captioner: find/replace, de-duplication, length, trigger, affixes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

GENERIC_WORDS = (
    "beautiful",
    "nice",
    "amazing",
    "awesome",
    "good",
    "great",
    "pretty",
    "stunning",
    "masterpiece",
)


@dataclass
class CaptionRules:
    """What to do with a raw caption before it is written."""

    trigger_word: str = ""
    prefix: str = ""
    suffix: str = ""
    replace: list[tuple[str, str]] = field(default_factory=list)  # (find, replace); find may be /regex/
    deduplicate: bool = True
    max_length: int | None = None  # characters


def _apply_replace(text: str, rules: list[tuple[str, str]]) -> str:
    for find, repl in rules:
        if len(find) > 2 and find.startswith("/") and find.endswith("/"):
            text = re.sub(find[1:-1], repl, text)
        else:
            text = text.replace(find, repl)
    return text


def _dedupe(parts: list[str]) -> list[str]:
    seen, out = set(), []
    for part in parts:
        key = part.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(part.strip())
    return out


def finish_caption(raw: str, rules: CaptionRules, existing: str | None = None) -> str:
    """The caption to write: existing text (append mode) + processed raw caption, trigger first."""
    text = _apply_replace(raw.strip(), rules.replace)
    parts = [p for p in (rules.prefix, existing or "", text, rules.suffix) if p and p.strip()]
    pieces = [p.strip() for chunk in parts for p in chunk.split(",")]
    if rules.deduplicate:
        pieces = _dedupe(pieces)
    if rules.trigger_word:
        pieces = [rules.trigger_word] + [p for p in pieces if p.lower() != rules.trigger_word.lower()]
    caption = ", ".join(p for p in pieces if p)
    if rules.max_length and len(caption) > rules.max_length:
        cut = caption[: rules.max_length]
        caption = cut[: cut.rfind(",")] if "," in cut else cut
    return caption.strip().strip(",").strip()
