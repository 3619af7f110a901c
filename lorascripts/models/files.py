"""Reading `.safetensors` files with every failure turned into a ModelError that names the file.

The safetensors library already refuses malformed, truncated and over-large (>100 MB) headers; this module
only gives those refusals one clear message, and reads either everything or just the shapes.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import ModelError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _unreadable(path: Path, what: str, exc: BaseException) -> ModelError:
    return ModelError(f"{path} is not a readable .safetensors {what} ({exc}). Re-download or re-export it.")


def refuse_pickle(path: Path, what: str) -> None:
    """Only .safetensors is read here: pickle files (.ckpt/.pt/...) can run code when loaded."""
    if Path(path).suffix.lower() != ".safetensors":
        raise ModelError(f"{path}: only .safetensors {what}s are read here (pickle files can run code).")


def read_safetensors(path: Path, what: str = "file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a .safetensors file."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise ModelError(f"{what} {path} does not exist.")
    try:
        with safe_open(str(path), "pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, what, exc) from None


def safetensors_shapes(path: Path, what: str = "file") -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a .safetensors file, from its header only."""
    from safetensors import SafetensorError, safe_open

    refuse_pickle(path, what)
    if not Path(path).is_file():
        raise ModelError(f"{what} {path} does not exist.")
    try:
        with safe_open(str(path), "pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, what, exc) from None


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None.

    A float32 sum is one pass without a temporary (about 2.5x faster than isfinite().all() on CPU) and is
    non-finite whenever an element is; weights never sum to 3e38, so a non-finite sum is confirmed exactly.
    """
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        if not math.isfinite(float(tensor.sum(dtype=torch.float32))) and not bool(
            torch.isfinite(tensor).all()
        ):
            return name
    return None
