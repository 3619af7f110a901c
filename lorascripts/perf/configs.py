"""Architecture of a base model without loading its weights: configs and parameter counts from file headers.

A single-file checkpoint's safetensors header holds every tensor's shape, and each family derives its configs
from shapes as its loader does (`Family.shapes_from_checkpoint`), so the pre-flight estimate reads the header
only (a few MB even for SDXL). Diffusers folders carry their configs as JSON next to the weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError

if TYPE_CHECKING:
    from ..models.families import Family


@dataclass
class ModelShapes:
    """What the estimate needs to know about a base model: family, component configs, sizes on disk."""

    family: Family
    denoiser: dict[str, Any]  # the denoiser's diffusers config
    vae: dict[str, Any]
    text_encoders: list[dict[str, Any]]
    params: dict[str, int] = field(default_factory=dict)  # "unet" (the denoiser), "vae", "text" -> parameters
    file_bytes: int = 0  # bytes of the weight files (what a load reads into memory at once)
    single_file: bool = False

    @property
    def resolution(self) -> int:
        """Native resolution, as the loader computes it."""
        return self.family.native_resolution(self.denoiser, self.vae)


def _header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}, fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path} is not a readable .safetensors file ({exc}).") from None


def read_config(path: Path) -> dict[str, Any]:
    """A component's config.json without diffusers' private `_` keys."""
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if not k.startswith("_")}


def folder_params(folder: Path) -> tuple[int, int]:
    """(parameters, bytes) of a diffusers component folder's safetensors files."""
    files = sorted(folder.glob("*.safetensors"))
    total = sum(math.prod(shape) for f in files for shape in _header(f)[0].values())
    return total, sum(f.stat().st_size for f in files)


def _from_single_file(path: Path) -> ModelShapes:
    from ..models.families import family_of_checkpoint, known_kinds

    shapes, metadata = _header(path)
    family = family_of_checkpoint(list(shapes))
    if family is None:
        raise ModelError(f"{path.name} is not a {known_kinds()} checkpoint (no known text-encoder keys).")
    return family.shapes_from_checkpoint(shapes, metadata, path.stat().st_size)


def _from_folder(path: Path) -> ModelShapes:
    from ..models.families import family_of_diffusers

    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    family = family_of_diffusers(str(path), index, local_only=True)
    if family is None:
        raise ModelError(f"{path} is a {index.get('_class_name')} folder, not a model family we train.")
    return family.shapes_from_folder(path)


def model_shapes(source: str) -> ModelShapes:
    """Configs and sizes of a base model (single .safetensors file, diffusers folder, or `toy`)."""
    if source == "toy":
        from ..toy import TOY_MODEL_DIR

        source = str(TOY_MODEL_DIR)
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        return _from_single_file(path)
    if path.is_dir() and (path / "model_index.json").is_file():
        return _from_folder(path)
    raise ModelError(
        f"cannot read the architecture of {source} without loading it (only .safetensors files and diffusers "
        "folders are read from their headers)."
    )


def denoiser_config_for(source: str) -> dict[str, Any]:
    """The denoiser's diffusers config of a checkpoint file, a diffusers folder or `toy`."""
    return model_shapes(source).denoiser
