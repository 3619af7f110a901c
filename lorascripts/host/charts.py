"""Pictures hosts show while training: the loss curves as a plain PIL image (ComfyUI IMAGE, gradio Image)."""

from __future__ import annotations

from typing import Any

TRAIN_COLOUR, VALIDATION_COLOUR = (30, 90, 200), (230, 120, 20)


def loss_chart(
    losses: list[tuple[int, float]],
    size: tuple[int, int] = (512, 256),
    validation: list[tuple[int, float]] | None = None,
) -> Any:
    """Training (blue) and validation (orange) loss over the steps, on one scale, with the last values under it."""
    from PIL import Image, ImageDraw

    w, h = size
    validation = validation or []
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), "training loss", fill=TRAIN_COLOUR)
    if validation:
        draw.text((110, 6), "validation loss", fill=VALIDATION_COLOUR)
    both = losses + validation
    if len(both) < 2:
        return image
    first, last = min(s for s, _ in both), max(s for s, _ in both)
    lo, hi = min(v for _, v in both), max(v for _, v in both)
    span = (hi - lo) or 1.0

    def xy(step: int, value: float) -> tuple[float, float]:
        return 30 + (step - first) / max(1, last - first) * (w - 45), h - 20 - (value - lo) / span * (h - 50)

    for series, colour in ((losses, TRAIN_COLOUR), (validation, VALIDATION_COLOUR)):
        if len(series) > 1:
            draw.line([xy(s, v) for s, v in series], fill=colour, width=2)
    for s, v in validation:  # few points, each an evaluation: mark them
        x, y = xy(s, v)
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=VALIDATION_COLOUR)
    text = f"step {first}..{last}"
    text += f"  loss {losses[-1][1]:.4f}" if losses else ""
    text += f"  validation {validation[-1][1]:.4f}" if validation else ""
    draw.text((8, h - 16), text, fill=(80, 80, 80))
    return image
