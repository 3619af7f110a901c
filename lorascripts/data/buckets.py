"""Aspect-ratio buckets (as kohya's `BucketManager`): every image trains at about the same pixel area in the
bucket whose aspect ratio is closest to its own, so tall and wide images are not cropped to squares."""

from __future__ import annotations

import math
import random

from PIL import Image


class BucketSet:
    """Bucket sizes for a training area `resolution` (w, h), sides multiples of `step` within [min, max]."""

    def __init__(
        self,
        resolution: tuple[int, int],
        *,
        min_reso: int = 256,
        max_reso: int = 1024,
        step: int = 64,
        no_upscale: bool = False,
    ) -> None:
        self.resolution = resolution
        self.area = resolution[0] * resolution[1]
        self.step = step
        self.min_reso, self.max_reso = min_reso, max_reso
        self.no_upscale = no_upscale
        self.sizes = self._make_sizes()

    def _make_sizes(self) -> list[tuple[int, int]]:
        sizes = {self._fit(*self.resolution)}
        width = self.min_reso
        while width <= self.max_reso:
            height = min(self.max_reso, (self.area // width) // self.step * self.step)
            if height >= self.min_reso:
                sizes.add((width, height))
                sizes.add((height, width))
            width += self.step
        return sorted(sizes)

    def _fit(self, width: int, height: int) -> tuple[int, int]:
        return (
            max(self.step, width // self.step * self.step),
            max(self.step, height // self.step * self.step),
        )

    def assign(self, width: int, height: int) -> tuple[int, int]:
        """The bucket (w, h) of an image of this size."""
        ratio = width / height
        if self.no_upscale and width * height <= self.area:
            return self._fit(width, height)  # small image: its own size rounded down, never enlarged
        return min(self.sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - math.log(ratio)), -s[0] * s[1]))

    def resize_and_crop(
        self, image: Image.Image, size: tuple[int, int], rng: random.Random | None
    ) -> tuple[Image.Image, tuple[int, int], tuple[int, int]]:
        """Scale to cover `size`, then crop (centre, or random with `rng`).

        Returns the image, the crop's top-left (x, y) and the original (w, h) — SDXL's size conditioning.
        """
        original = image.size
        bw, bh = size
        scale = max(bw / image.width, bh / image.height)
        rw, rh = max(bw, round(image.width * scale)), max(bh, round(image.height * scale))
        if (rw, rh) != image.size:
            image = image.resize((rw, rh), Image.Resampling.LANCZOS)
        if rng is None:
            left, top = (rw - bw) // 2, (rh - bh) // 2
        else:
            left, top = rng.randint(0, rw - bw), rng.randint(0, rh - bh)
        return image.crop((left, top, left + bw, top + bh)), (left, top), original
