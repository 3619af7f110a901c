"""Reading training images safely: every failure names the file and says what to do."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"cannot read image {path}: {exc}. Re-export or delete the file, or set `bad_images: skip`."
        ) from None
    return image


def check_image(path: Path) -> tuple[int, int]:
    """Decode the whole image once (so truncated files are caught before training); return (w, h)."""
    image = _open(path)
    size = ImageOps.exif_transpose(image).size
    image.close()
    return size


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF rotation, read from the header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}.") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit greyscale -> 8-bit L (PIL's own convert would clip everything above 255 to white)."""
    import numpy as np

    array = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if array.max() > 255 else 255.0
    return Image.fromarray((array / peak * 255).round().clip(0, 255).astype("uint8"), mode="L")


def load_image(path: Path, background: tuple[int, ...] = (255, 255, 255)) -> Image.Image:
    """RGB image with EXIF rotation applied and transparency composited on `background`.

    Handles greyscale, palette, RGBA/LA, 16-bit and CMYK files.
    """
    image = ImageOps.exif_transpose(_open(path))
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = _to_8bit(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background[:3], 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")
