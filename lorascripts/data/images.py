"""Reading training images safely: every failure names the file and says what to do."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DatasetError

# .gif: the first frame is used (the pre-flight check warns about animated files)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
_FIX = "Re-export or delete the file, or set `bad_images: skip`."


def has_image_suffix(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_image(path: Path) -> bool:
    return path.is_file() and has_image_suffix(path)


def dangling_images(folder: Path) -> list[Path]:
    """Entries with an image extension that are not readable files (broken symlinks, symlink loops)."""
    return sorted(p for p in folder.iterdir() if has_image_suffix(p) and p.is_symlink() and not p.is_file())


def _unreadable(path: Path, reason: object, fix: str = _FIX) -> DatasetError:
    return DatasetError(f"cannot read image {path}: {reason}. {fix}")


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except Image.DecompressionBombError as exc:
        # PIL refuses pictures over ~179 megapixels before decoding them (a small file can claim any size)
        raise _unreadable(path, exc, "Downscale it below 179 megapixels or delete it.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _unreadable(path, exc) from None
    return image


def _transpose(path: Path, image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError) as exc:  # a malformed EXIF block
        raise _unreadable(path, f"malformed EXIF data ({exc})", "Re-save it without EXIF data.") from None


def check_image(path: Path) -> tuple[int, int]:
    """Decode the whole image once (so truncated files are caught before training); return (w, h)."""
    image = _open(path)
    size = _transpose(path, image).size
    image.close()
    return size


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF rotation, read from the header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}.") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def is_animated(path: Path) -> bool:
    """True for files with more than one frame (animated GIF/WebP/PNG); only their first frame is trained."""
    try:
        with Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit greyscale -> 8-bit L (PIL's own convert would clip everything above 255 to white)."""
    import numpy as np

    array = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if array.max() > 255 else 255.0
    return Image.fromarray((array / peak * 255).round().clip(0, 255).astype("uint8"), mode="L")


def load_image(path: Path, background: tuple[int, ...] = (255, 255, 255)) -> Image.Image:
    """RGB image with EXIF rotation applied and transparency composited on `background`.

    Handles greyscale, palette, RGBA/LA, 16-bit and CMYK files, and the first frame of animated ones.
    """
    image = _transpose(path, _open(path))
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background[:3], 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")
