"""`<lora:name:0.7>` prompt tags with the WebUI's rules (LORA_FORMAT.md §4.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG = re.compile(r"<lora:([^:>]+)((?::[^:>]*)*)>")


@dataclass(frozen=True)
class LoraTag:
    name: str
    te: float
    unet: float


def _number(text: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{tag}: {text!r} is not a number") from None


def parse_prompt_tags(prompt: str) -> tuple[str, list[LoraTag]]:
    """The prompt without tags, and the tags: `<lora:n>` (1, 1), `<lora:n:A>` (A, A), `<lora:n:A:B>` (te A,
    unet B); named `te=` / `unet=` override positional ones; a 4th positional (DyLoRA rank) is ignored."""
    tags = []
    for match in TAG.finditer(prompt):
        whole = match.group(0)
        args = [a for a in match.group(2).split(":")[1:]]
        positional = [a for a in args if "=" not in a]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        te = _number(positional[0], whole) if positional else 1.0
        unet = _number(positional[1], whole) if len(positional) > 1 else te
        te = _number(named["te"], whole) if "te" in named else te
        unet = _number(named["unet"], whole) if "unet" in named else unet
        tags.append(LoraTag(match.group(1).strip(), te, unet))
    clean = re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", TAG.sub("", prompt)))
    clean = re.sub(r",\s*,", ",", clean).strip().strip(",").strip()
    return clean, tags
