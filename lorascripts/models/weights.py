"""Reading weight files and putting their tensors into models: shared by every family's loader.

Families build their modules with `uninitialised` (parameters on the meta device) and fill them with
`load_into`, which checks every weight's presence and shape and names the file when something is wrong.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .files import PICKLE_SUFFIXES, read_safetensors
from .scaled_fp8 import dequantise

logger = logging.getLogger(__name__)

# set while a run with `fp8_base` loads its model: float8 matrices of the file are assigned as they are (the
# fp8 storage of models/fp8.py keeps them) instead of being upcast to the run's dtype first
_KEEP_FLOAT8: ContextVar[bool] = ContextVar("keep_float8", default=False)


@contextlib.contextmanager
def keep_float8() -> Iterator[None]:
    """Within the block, `load_into` keeps a file's float8 matrices in float8 (no upcast copy in memory)."""
    token = _KEEP_FLOAT8.set(True)
    try:
        yield
    finally:
        _KEEP_FLOAT8.reset(token)


def _load_dtype(value: torch.Tensor, own: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    if not own.is_floating_point():
        return own.dtype
    if _KEEP_FLOAT8.get() and value.dtype == torch.float8_e4m3fn and value.dim() == 2:
        return value.dtype
    return dtype


def read_weights(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weights of a model's .safetensors file (a checkpoint or a part file) and its metadata; ComfyUI's
    scaled fp8 weights come back dequantised (scaled_fp8.py), the same for every family."""
    state, metadata = read_safetensors(path, what)
    return dequantise(state, Path(path)), metadata


def read_checkpoint(path: Path, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix.lower() == ".safetensors":
        return read_weights(path, "checkpoint")
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise ModelError(f"{path}: unknown checkpoint type {path.suffix!r}; use .safetensors.")
    if not allow_pickle:
        raise ModelError(
            f"{path.name} is a pickle checkpoint, which can run code when loaded. Use a .safetensors version, "
            "or set `allow_pickle: true` (it is then loaded with weights_only=True)."
        )
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad pickles
        # torch's own message suggests weights_only=False, the one thing not to do with an untrusted file
        lines = str(exc).splitlines() or [type(exc).__name__]
        reason = next((ln.strip() for ln in lines if "Unsupported global" in ln), lines[0])
        if "weights_only" not in str(exc).lower() and "Unsupported global" not in str(exc):
            raise ModelError(f"{path} is not a readable checkpoint ({reason}). Re-download it.") from None
        raise ModelError(
            f"{path} was refused: it is not a plain-weights pickle and could run code when loaded ({reason}). "
            "Use a .safetensors version of the model."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a checkpoint's dictionary of weights.")
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}, {}


def uninitialised(cls: Callable[..., torch.nn.Module], *args: Any, **kwargs: Any) -> torch.nn.Module:
    """Build a model with its parameters on the meta device: `load_into` assigns every one from the file.

    Random initialisation of SD1.5's ~1.1 B parameters only to overwrite them took seconds and a second full
    copy of the weights in memory; buffers stay real (position ids are not always in the file).
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return cls(*args, **kwargs)


def load_into(
    module: torch.nn.Module,
    weights: dict[str, torch.Tensor],
    what: str,
    path: Path,
    dtype: torch.dtype,
    *,
    text: bool = False,
) -> None:
    own = module.state_dict()
    if text and not any(k.startswith("text_model.") for k in own):
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    weights = {k: v for k, v in weights.items() if k in own}
    missing = [k for k in own if k not in weights and not k.endswith("position_ids")]
    if missing:
        raise ModelError(
            f"{path.name}: the {what} lacks {len(missing)} weights (e.g. {missing[0]}); the file is "
            "incomplete or of an unsupported variant."
        )
    bad = [k for k, v in weights.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ModelError(
            f"{path.name}: the {what} weight {bad[0]} has shape {tuple(weights[bad[0]].shape)}, "
            f"expected {tuple(own[bad[0]].shape)}."
        )
    # assign: the parameters are on the meta device (see uninitialised); floating weights take the dtype the run
    # computes in now (no fp32 copy first, and no cast later: diffusers warns on every `.to(dtype)`)
    cast = {k: v.to(_load_dtype(v, own[k], dtype)) for k, v in weights.items()}
    upcast = sum(v.dtype == torch.float8_e4m3fn and cast[k].dtype != v.dtype for k, v in weights.items())
    if upcast:
        logger.info(
            "%s: the %s's %d float8 weights upcast to %s (fp8_base: true keeps a diffusion transformer's in fp8)",
            path.name,
            what,
            upcast,
            str(dtype).removeprefix("torch."),
        )
    module.load_state_dict(cast, strict=False, assign=True)
