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


# How vision-language models open a caption without saying anything: "The image shows", "This picture depicts".
HEDGING = re.compile(
    r"^\s*(?:(?:the|this|in this|in the)\s+)?(?:image|picture|photo(?:graph)?|illustration|artwork|drawing|"
    r"painting|scene)\s+(?:shows|depicts|features|displays|presents|portrays|captures|is of|we see|there is|"
    r"there are)\s*",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def hedging_opener(caption: str) -> str | None:
    """The hedging phrase a caption opens with, also after leading tags such as the trigger word."""
    for piece in caption.split(",")[:3]:
        found = HEDGING.match(piece)
        if found:
            return found.group(0).strip()
    return None


def sentences(text: str) -> list[str]:
    """The sentences of a caption (split after . ! ?)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def repeated_sentences(text: str) -> list[str]:
    """Sentences that occur more than once (a model stuck in a loop)."""
    seen: set[str] = set()
    repeated = []
    for s in sentences(text):
        key = s.lower()
        if key in seen and key not in [r.lower() for r in repeated]:
            repeated.append(s)
        seen.add(key)
    return repeated


def tidy_sentences(text: str, *, tags: bool = False, cut: bool = False) -> str:
    """A VLM's answer as a caption: one line, no hedging opener, no repeated sentence, and (`cut`: the token
    limit stopped it) no half sentence at the end; tag lists only become one comma-separated line."""
    text = " ".join(text.replace("\r", "\n").split("\n")).strip()
    if tags:
        return ", ".join(t.strip() for t in re.split(r"[,\n]", text) if t.strip())
    text = HEDGING.sub("", text, count=1)
    text = text[:1].upper() + text[1:]
    kept: list[str] = []
    for s in sentences(text):
        if s.lower() not in (k.lower() for k in kept):
            kept.append(s)
    if cut and len(kept) > 1 and not kept[-1].endswith((".", "!", "?")):
        kept.pop()
    return " ".join(kept)
