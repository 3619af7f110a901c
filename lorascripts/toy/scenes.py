"""Procedural captioned pictures: coloured shapes on plain backgrounds, the toy model's whole world.

Captions describe every visible property (colour, shape, size, position, background), so prompts steer what
the toy model draws.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (240, 140, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
BACKGROUNDS = {
    "white": (245, 245, 240),
    "gray": (128, 128, 128),
    "black": (20, 20, 25),
    "sky": (150, 200, 240),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.22, "large": 0.42}
POSITIONS = {
    "center": (0.5, 0.5),
    "left": (0.28, 0.5),
    "right": (0.72, 0.5),
    "top": (0.5, 0.28),
    "bottom": (0.5, 0.72),
}


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], radius: float, fill
) -> None:
    x, y = centre
    if shape == "circle":
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
    elif shape == "square":
        draw.rectangle((x - radius, y - radius, x + radius, y + radius), fill=fill)
    else:
        draw.polygon(
            [(x, y - radius), (x - radius, y + radius * 0.9), (x + radius, y + radius * 0.9)], fill=fill
        )


def random_scene(rng: random.Random, size: int = 64) -> tuple[Image.Image, str]:
    """One picture and its caption, e.g. `a large red circle on the left, sky background`."""
    background = rng.choice(list(BACKGROUNDS))
    colours = [c for c in COLOURS if c != background]
    colour, shape = rng.choice(colours), rng.choice(SHAPES)
    size_name, position = rng.choice(list(SIZES)), rng.choice(list(POSITIONS))
    return render_scene(colour, shape, size_name, position, background, size), caption_for(
        colour, shape, size_name, position, background
    )


def augmented_scene(rng: random.Random, size: int = 64) -> Image.Image:
    """A scene with arbitrary RGB colours and sometimes a frame: wider coverage for training the VAE."""
    image, _ = random_scene(rng, size)
    if rng.random() < 0.5:

        def colour() -> tuple[int, int, int]:
            return (rng.randrange(256), rng.randrange(256), rng.randrange(256))

        image = Image.new("RGB", (size, size), colour())
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 3)):
            centre = (rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size)
            _draw_shape(draw, rng.choice(SHAPES), centre, rng.uniform(0.1, 0.35) * size, colour())
        if rng.random() < 0.5:
            width = rng.randint(2, 8)
            draw.rectangle((0, 0, size - 1, size - 1), outline=colour(), width=width)
    return image


def all_scenes(size: int = 64) -> list[tuple[Image.Image, str]]:
    """Every distinct scene of the toy world (the renderer is deterministic)."""
    out = []
    for background in BACKGROUNDS:
        for colour in COLOURS:
            if COLOURS[colour] == BACKGROUNDS[background] or (colour, background) in (
                ("white", "white"),
                ("black", "black"),
            ):
                continue
            for shape in SHAPES:
                for size_name in SIZES:
                    for position in POSITIONS:
                        out.append(
                            (
                                render_scene(colour, shape, size_name, position, background, size),
                                caption_for(colour, shape, size_name, position, background),
                            )
                        )
    return out


def caption_for(colour: str, shape: str, size_name: str, position: str, background: str) -> str:
    where = "in the center" if position == "center" else f"on the {position}"
    return f"a {size_name} {colour} {shape} {where}, {background} background"


def render_scene(
    colour: str, shape: str, size_name: str, position: str, background: str, size: int = 64
) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    px, py = POSITIONS[position]
    _draw_shape(draw, shape, (px * size, py * size), SIZES[size_name] * size / 2 * 1.4, COLOURS[colour])
    return image


def vocabulary() -> list[str]:
    """Every caption word (for training the tokenizer)."""
    words = {"a", "in", "the", "center", "on", "background", ","}
    words |= set(COLOURS) | set(BACKGROUNDS) | set(SHAPES) | set(SIZES) | set(POSITIONS)
    return sorted(words)
