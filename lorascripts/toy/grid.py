"""Before/after grids: the same prompts and seeds rendered at several LoRA strengths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..network.from_file import load_lora
from ..train.sampling import build_pipeline, render


@dataclass
class GridResult:
    images: dict[tuple[str, float], Image.Image]
    prompts: list[str]
    strengths: list[float]


def render_strengths(
    base: Any,
    lora_path: Path,
    prompts: list[str],
    strengths: list[float],
    *,
    seed: int = 1234,
    steps: int = 25,
    guidance_scale: float = 5.0,
    size: int | None = None,
) -> GridResult:
    """One image per (prompt, strength); every strength starts from the same noise for a prompt."""
    size = size or base.resolution
    network = load_lora(base, lora_path)
    pipeline = build_pipeline(base)
    pipeline.set_progress_bar_config(disable=True)
    images: dict[tuple[str, float], Image.Image] = {}
    try:
        for strength in strengths:
            network.set_multiplier(strength)
            outs = render(
                pipeline,
                prompts,
                seed=seed,
                width=size,
                height=size,
                steps=steps,
                guidance_scale=guidance_scale,
            )
            for i, prompt in enumerate(prompts):
                images[(prompt, strength)] = outs[i]
    finally:
        network.remove()
    return GridResult(images, prompts, strengths)


def compose_grid(result: GridResult, cell: int = 160, label_width: int = 300) -> Image.Image:
    """Rows: prompts; columns: strengths; labelled."""
    header = 24
    width = label_width + cell * len(result.strengths)
    height = header + cell * len(result.prompts)
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for j, strength in enumerate(result.strengths):
        draw.text((label_width + j * cell + 8, 6), f"LoRA strength {strength:g}", fill=(0, 0, 0))
    for i, prompt in enumerate(result.prompts):
        y = header + i * cell
        for k, line in enumerate(_wrap(prompt, 40)):
            draw.text((8, y + 8 + 14 * k), line, fill=(0, 0, 0))
        for j, strength in enumerate(result.strengths):
            image = result.images[(prompt, strength)].resize((cell - 4, cell - 4), Image.Resampling.NEAREST)
            grid.paste(image, (label_width + j * cell + 2, y + 2))
    return grid


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines
