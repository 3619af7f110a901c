"""Architecture of a base model without loading its weights: configs and parameter counts from file headers.

A single-file checkpoint's safetensors header holds every tensor's shape and dtype, and each family derives its
configs from shapes as its loader does (`Family.shapes_from_checkpoint`), so the pre-flight estimate reads the
header only (a few MB even for SDXL). A diffusion transformer's part files (VAE, text encoders) are the ones its
loader will read (`models/families/part_files.py`), read the same way (`PartsRead`); a part not found before
loading stands in at the family's published size and is named in the estimate. Diffusers folders carry their
configs as JSON next to the weights.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError

if TYPE_CHECKING:
    from ..models.families import Family
    from ..models.families.part_files import PartFile

logger = logging.getLogger(__name__)


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
    assumed: list[str] = field(default_factory=list)  # parts not found before loading: published sizes used

    @property
    def resolution(self) -> int:
        """Native resolution, as the loader computes it."""
        return self.family.native_resolution(self.denoiser, self.vae)


@dataclass(frozen=True)
class Header:
    """A .safetensors file's header: tensor shapes, metadata, size on disk."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]
    file_bytes: int


def read_header(path: Path) -> Header:
    """The header of a .safetensors file (no tensor data read); ModelError when it is not readable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
            metadata = fh.metadata() or {}
        size = path.stat().st_size
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path} is not a readable .safetensors file ({exc}).") from None
    return Header(path, shapes, metadata, size)


@dataclass
class PartsRead:
    """The bytes of the files a load reads (their dtypes are in their size: an fp8 T5 file is half an fp16 one),
    and the parts that could not be found before loading (the family's published file stands in; the estimate's
    line names them)."""

    file_bytes: int = 0
    assumed: list[str] = field(default_factory=list)

    def model_shapes(self, family: Family, **configs: Any) -> ModelShapes:
        """The single-file ModelShapes of these files (`configs`: denoiser, vae, text_encoders, params)."""
        return ModelShapes(
            family, **configs, file_bytes=self.file_bytes, single_file=True, assumed=self.assumed
        )

    def add(self, header: Header) -> Header:
        self.file_bytes += header.file_bytes
        return header

    def part(
        self, part: PartFile, given: str | None, transformer: Path, family: str, published: tuple[int, str]
    ) -> dict[str, tuple[int, ...]]:
        """The shapes of the part file the loader will read (its own rules: part_files.find_part_file); {} when it
        cannot be found now (the load will say why): then the published file (parameters, dtype) stands in."""
        from ..models.families.part_files import find_part_file

        try:
            file = find_part_file(part, given, transformer, family, announce=False)
            return self.add(read_header(file)).shapes
        except ModelError as exc:
            logger.info("estimate: %s", exc)
        self.assumed.append(part.label)
        self.file_bytes += published[0] * DTYPE_BYTES[published[1]]
        return {}


DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}  # of the published part files


def read_config(path: Path) -> dict[str, Any]:
    """A component's config.json without diffusers' private `_` keys."""
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if not k.startswith("_")}


def folder_params(folder: Path) -> tuple[int, int]:
    """(parameters, bytes) of a diffusers component folder's safetensors files."""
    files = sorted(folder.glob("*.safetensors"))
    total = sum(math.prod(shape) for f in files for shape in read_header(f).shapes.values())
    return total, sum(f.stat().st_size for f in files)


def _from_single_file(path: Path, components: dict[str, str | None]) -> ModelShapes:
    from ..models.families import family_of_checkpoint, known_kinds

    header = read_header(path)
    family = family_of_checkpoint(list(header.shapes))
    if family is None:
        raise ModelError(f"{path.name} is not a {known_kinds()} checkpoint (no known text-encoder keys).")
    return family.shapes_from_checkpoint(header, components)


def _from_folder(path: Path) -> ModelShapes:
    from ..models.families import family_of_diffusers

    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    family = family_of_diffusers(str(path), index, local_only=True)
    if family is None:
        raise ModelError(f"{path} is a {index.get('_class_name')} folder, not a model family we train.")
    return family.shapes_from_folder(path)


def model_shapes(source: str, components: dict[str, str | None] | None = None) -> ModelShapes:
    """Configs and sizes of a base model (single .safetensors file, diffusers folder, or `toy`); `components`:
    the run's part files (`vae`, `text_encoder`, `text_encoder_2`), None = found as the loader finds them."""
    if source == "toy":
        from ..toy import TOY_MODEL_DIR

        source = str(TOY_MODEL_DIR)
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        return _from_single_file(path, components or {})
    if path.is_dir() and (path / "model_index.json").is_file():
        return _from_folder(path)
    raise ModelError(
        f"cannot read the architecture of {source} without loading it (only .safetensors files and diffusers "
        "folders are read from their headers)."
    )


def denoiser_config_for(source: str) -> dict[str, Any]:
    """The denoiser's diffusers config of a checkpoint file, a diffusers folder or `toy`."""
    return model_shapes(source).denoiser
