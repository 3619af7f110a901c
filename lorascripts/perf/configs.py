"""Architecture of a base model without loading its weights: configs and parameter counts from file headers.

A single-file checkpoint's safetensors header holds every tensor's shape, and the loader already derives the
diffusers configs from shapes (`models/single_file.py`), so the pre-flight estimate reads the header only
(a few MB even for SDXL). Diffusers folders carry their configs as JSON next to the weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError


@dataclass
class ModelShapes:
    """What the estimate needs to know about a base model: family, component configs, sizes on disk."""

    family: str  # "sd1", "sd2" or "sdxl"
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: list[dict[str, Any]]
    params: dict[str, int] = field(default_factory=dict)  # "unet", "vae", "text" -> parameter count
    file_bytes: int = 0  # bytes of the weight files (what a load reads into memory at once)
    single_file: bool = False

    @property
    def resolution(self) -> int:
        """Native resolution, as the loader computes it."""
        return int(self.unet["sample_size"]) * 2 ** (len(self.vae["block_out_channels"]) - 1)


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path} is not a readable .safetensors file ({exc}).") from None


def _header_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return fh.metadata() or {}


def _count(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    return sum(math.prod(v) for k, v in shapes.items() if k.startswith(prefix))


def _from_single_file(path: Path) -> ModelShapes:
    from ..models.family import ModelFamily, family_from_keys
    from ..models.ldm_names import text_encoder_layouts
    from ..models.single_file import ARCH_KEY, text_config, unet_config, vae_config

    shapes = _header_shapes(path)
    family = family_from_keys(list(shapes))
    if family is None:
        raise ModelError(f"{path.name} is not a Stable Diffusion checkpoint (no CLIP text-encoder keys).")
    arch = json.loads(_header_metadata(path).get(ARCH_KEY, "{}"))
    if family is ModelFamily.SDXL:
        arch.setdefault("pooled_dim", shapes["conditioner.embedders.1.model.text_projection"][1])
    layouts = text_encoder_layouts(family.value)
    texts = [text_config(shapes, prefix, layout, arch, i) for i, (prefix, layout) in enumerate(layouts)]
    return ModelShapes(
        family=family.value,
        unet=unet_config(shapes, family, arch),
        vae=vae_config(shapes, family, arch),
        text_encoders=texts,
        params={
            "unet": _count(shapes, "model.diffusion_model."),
            "vae": _count(shapes, "first_stage_model."),
            "text": sum(_count(shapes, prefix) for prefix, _ in layouts),
        },
        file_bytes=path.stat().st_size,
        single_file=True,
    )


def _json(path: Path) -> dict[str, Any]:
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if not k.startswith("_")}


def _folder_params(folder: Path) -> tuple[int, int]:
    """(parameters, bytes) of a diffusers component folder's safetensors files."""
    files = sorted(folder.glob("*.safetensors"))
    total = sum(_count(_header_shapes(f), "") for f in files)
    return total, sum(f.stat().st_size for f in files)


def _from_folder(path: Path) -> ModelShapes:
    text_dirs = [d for d in ("text_encoder", "text_encoder_2") if (path / d / "config.json").is_file()]
    sizes = {name: _folder_params(path / name) for name in ("unet", "vae", *text_dirs)}
    unet = _json(path / "unet" / "config.json")
    if unet.get("addition_embed_type") == "text_time":
        family = "sdxl"
    else:
        family = "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"
    return ModelShapes(
        family=family,
        unet=unet,
        vae=_json(path / "vae" / "config.json"),
        text_encoders=[_json(path / d / "config.json") for d in text_dirs],
        params={
            "unet": sizes["unet"][0],
            "vae": sizes["vae"][0],
            "text": sum(sizes[d][0] for d in text_dirs),
        },
        file_bytes=sum(b for _, b in sizes.values()),
    )


def model_shapes(source: str) -> ModelShapes:
    """Configs and sizes of a base model (single .safetensors file, diffusers folder, or `toy`)."""
    if source == "toy":
        from ..toy import TOY_MODEL_DIR

        source = str(TOY_MODEL_DIR)
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        return _from_single_file(path)
    if path.is_dir() and (path / "unet" / "config.json").is_file():
        return _from_folder(path)
    raise ModelError(
        f"cannot read the architecture of {source} without loading it (only .safetensors files and diffusers "
        "folders are read from their headers)."
    )


def unet_config_for(source: str) -> dict[str, Any]:
    """diffusers UNet2DConditionModel config of a checkpoint file, a diffusers folder or `toy`."""
    return model_shapes(source).unet
