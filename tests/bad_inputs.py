"""The bad-input corpus, generated at test time (no binary blobs in the repository).

Each builder writes one broken or unusual file and returns its path; docs/BAD_INPUTS.md lists the outcome the
engine promises for each of them and the test that checks it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _noise(size: tuple[int, int] = (48, 48), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims `width` x `height` (a decompression bomb is a few bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def png_rgb16(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write these), encoded by hand."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def truncated_jpeg(folder: Path) -> Path:
    data = _encoded(_noise(), "JPEG")
    (path := folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    return path


def truncated_png(folder: Path) -> Path:
    data = _encoded(_noise(), "PNG")
    (path := folder / "cut.png").write_bytes(data[: len(data) // 2])
    return path


def zero_byte(folder: Path) -> Path:
    (path := folder / "empty.png").write_bytes(b"")
    return path


def not_an_image(folder: Path) -> Path:
    (path := folder / "notes.jpg").write_text("shopping list: eggs, milk\n", encoding="utf-8")
    return path


def decompression_bomb(folder: Path) -> Path:
    (path := folder / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    return path


def broken_symlink(folder: Path) -> Path:
    (path := folder / "gone.png").symlink_to(folder / "deleted-long-ago.png")
    return path


def symlink_loop(folder: Path) -> Path:
    path = folder / "loop.png"
    path.symlink_to(path)
    return path


BROKEN_IMAGES: dict[str, Callable[[Path], Path]] = {
    "truncated_jpeg": truncated_jpeg,
    "truncated_png": truncated_png,
    "zero_byte": zero_byte,
    "not_an_image": not_an_image,
    "decompression_bomb": decompression_bomb,
    "broken_symlink": broken_symlink,
    "symlink_loop": symlink_loop,
}


def good_images(folder: Path, n: int = 2, size: tuple[int, int] = (48, 48)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        _noise(size, seed=i).save(path := folder / f"good_{i}.png")
        paths.append(path)
    return paths


# --- LoRA files ------------------------------------------------------------------------------------------------


def safetensors_bytes(header: object, data: bytes = b"", *, length: int | None = None) -> bytes:
    """A .safetensors file from a header object (or raw header bytes) and a data region."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def first_key(tensors: dict[str, torch.Tensor], suffix: str) -> str:
    return next(k for k in sorted(tensors) if k.endswith(suffix))


def _edit(tensors: dict[str, torch.Tensor], suffix: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    out = dict(tensors)
    key = first_key(out, suffix)
    out[key] = fn(out[key].clone())
    return out


def _nan(t: torch.Tensor) -> torch.Tensor:
    t.view(-1)[0] = float("nan")
    return t


def lora_variants(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Damaged copies of a good kohya LoRA's tensors, by case name."""
    sdxl_names = {
        k.replace("lora_te_", "lora_te2_").replace("lora_unet_", "lora_unet_input_blocks_4_1_"): v
        for k, v in tensors.items()
    }
    return {
        "nan_tensor": _edit(tensors, "lora_up.weight", _nan),
        "rank_mismatch": _edit(
            tensors, "lora_down.weight", lambda t: torch.zeros(t.shape[0] + 1, *t.shape[1:])
        ),
        "alpha_not_scalar": _edit(tensors, "alpha", lambda t: torch.ones(3)),
        "missing_up": {k: v for k, v in tensors.items() if not k.endswith("lora_up.weight")},
        "no_tensors": {},
        "foreign_tensors": {"model.embed.weight": torch.zeros(4, 4)},
        "peft_keys": {"unet.down.attn.to_q.lora_A.weight": torch.zeros(4, 8)},
        "wrong_family": sdxl_names,
        "wrong_layer_shape": _edit(
            tensors, "lora_down.weight", lambda t: torch.zeros(t.shape[0], t.shape[1] + 3)
        ),
    }


def pickle_with_payload(path: Path, sentinel: Path) -> Path:
    """A torch pickle whose unpickling would create `sentinel` (it must never run)."""

    class Payload:
        def __reduce__(self):  # noqa: ANN204 - the classic pickle attack
            return (os.system, (f"touch {sentinel}",))

    torch.save({"state_dict": {"weight": Payload()}}, path)
    return path
