"""LoRA names typed by users, made safe as file names in a host's Lora folder."""

from __future__ import annotations


def safe_name(name: str) -> str:
    """Letters, digits, `-`, `_` and `.` kept, anything else `_`; never empty, never a path."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip()).strip("._")
    if not cleaned:
        raise ValueError("the LoRA name is empty; use letters, digits, - or _.")
    return cleaned
