"""The quickstart dataset: toy-world scenes in "zkstyle", captioned with the trigger word + their content."""

from __future__ import annotations

import random
from pathlib import Path

from ..data.captions import write_metadata
from .scenes import random_scene
from .style import apply_style

TRIGGER = "zkstyle"


def make_style_dataset(folder: Path, count: int = 24, seed: int = 7, size: int = 64) -> Path:
    """Write `count` styled PNGs and metadata.csv into `folder` (deterministic)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = {}
    for i in range(count):
        image, caption = random_scene(rng, size)
        name = f"zk_{i:02d}.png"
        apply_style(image).save(folder / name)
        rows[name] = f"{TRIGGER}, {caption}"
    write_metadata(folder / "metadata.csv", rows)
    return folder
