"""Pictures hosts show while training: the loss curve as a plain PIL image (ComfyUI IMAGE, gradio Image)."""

from __future__ import annotations

from typing import Any


def loss_chart(losses: list[tuple[int, float]], size: tuple[int, int] = (512, 256)) -> Any:
    """A line chart of (step, loss) pairs on white, with the last value written under it."""
    from PIL import Image, ImageDraw

    w, h = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), "training loss", fill=(0, 0, 0))
    if len(losses) > 1:
        steps, values = zip(*losses)
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        points = [
            (
                30 + (s - steps[0]) / max(1, steps[-1] - steps[0]) * (w - 45),
                h - 20 - (v - lo) / span * (h - 50),
            )
            for s, v in losses
        ]
        draw.line(points, fill=(30, 90, 200), width=2)
        draw.text((8, h - 16), f"step {steps[0]}..{steps[-1]}  loss {values[-1]:.4f}", fill=(80, 80, 80))
    return image
