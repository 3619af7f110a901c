"""Markdown reference of every config key, generated from the declarations (kept in the README by a test)."""

from __future__ import annotations

import dataclasses

from .base import RunConfig
from .fields import field_meta
from .llm import LLMConfig
from .schema import TrainConfig
from .validate import field_types

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "required" if f.default is dataclasses.MISSING else repr(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory())  # type: ignore[misc]
    return "**required**"


def config_reference_markdown() -> str:
    """One table per section: key, type, default, allowed values, aliases, meaning (the keys both tasks share and the image keys, then the `task: llm` ones)."""
    sections: dict[str, list[str]] = {}
    shared = {f.name for f in dataclasses.fields(RunConfig)}
    text = {f.name: f for f in dataclasses.fields(LLMConfig)}
    fields = [(f, field_types(TrainConfig)) for f in dataclasses.fields(TrainConfig)]
    fields += [(f, field_types(LLMConfig)) for f in text.values() if f.name not in shared]
    for f, types_ in fields:
        default = f"`{_default_text(f)}`"
        if f.name in shared and _default_text(text[f.name]) != _default_text(f):
            default += f" (llm: `{_default_text(text[f.name])}`)"
        meta = field_meta(f)
        tp = (
            str(types_[f.name])
            .replace("typing.", "")
            .replace("<class '", "")
            .replace("'>", "")
            .replace(" | ", " or ")
        )
        allowed = ", ".join(map(str, meta["choices"])) if meta["choices"] else ""
        if meta["min"] is not None or meta["max"] is not None:
            lo, hi = meta["min"], meta["max"]
            allowed = (
                f"{lo} .. {hi}"
                if lo is not None and hi is not None
                else (f">= {lo}" if lo is not None else f"<= {hi}")
            )
        aliases = ", ".join(f"`{a}`" for a in meta["aliases"])
        row = f"| `{f.name}` | {tp} | {default} | {allowed} | {aliases} | {meta['help']} |"
        sections.setdefault(meta["section"], []).append(row.replace("`**required**`", "**required**"))
    out = [BEGIN]
    for section, rows in sections.items():
        out += [
            f"\n#### {section}\n",
            "| key | type | default | allowed | aliases | meaning |",
            "|---|---|---|---|---|---|",
        ]
        out += rows
    out.append(END)
    return "\n".join(out) + "\n"
