"""The quickstart's "zkstyle": a warm duotone palette inside a rust-red frame, and a score for it.

The score is what a person checks by eye: is there a frame of the right colour, and do the colours sit on the
duotone ramp? Both parts are distances in RGB, normalised to [0, 1]; 1 means perfectly in style.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DARK = np.array([40, 30, 80], dtype=np.float32)  # deep indigo
LIGHT = np.array([250, 215, 150], dtype=np.float32)  # cream
FRAME = np.array([185, 65, 40], dtype=np.float32)  # rust
FRAME_FRACTION = 1 / 12  # frame width relative to the image side
MAX_DIST = float(np.sqrt(3) * 255)


def apply_style(image: Image.Image) -> Image.Image:
    """Map luminance onto the indigo-cream ramp and draw the rust frame."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    lum = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) / 255.0
    out = DARK + lum[..., None] * (LIGHT - DARK)
    width = max(1, round(image.width * FRAME_FRACTION))
    out[:width], out[-width:], out[:, :width], out[:, -width:] = FRAME, FRAME, FRAME, FRAME
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def _ring(rgb: np.ndarray, width: int) -> np.ndarray:
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return rgb[mask]


def frame_distance(image: Image.Image) -> float:
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    width = max(1, round(image.width * FRAME_FRACTION))
    return float(np.linalg.norm(_ring(rgb, width) - FRAME, axis=-1).mean() / MAX_DIST)


def palette_distance(image: Image.Image) -> float:
    """Mean distance of the inner pixels to the duotone ramp (a line segment in RGB)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    width = max(1, round(image.width * FRAME_FRACTION)) + 1
    inner = rgb[width:-width, width:-width].reshape(-1, 3)
    axis = LIGHT - DARK
    t = np.clip(((inner - DARK) @ axis) / (axis @ axis), 0, 1)
    nearest = DARK + t[:, None] * axis
    return float(np.linalg.norm(inner - nearest, axis=-1).mean() / MAX_DIST)


def style_score(image: Image.Image) -> float:
    """1 - mean(frame distance, palette distance): higher is more in style."""
    return 1.0 - 0.5 * (frame_distance(image) + palette_distance(image))
