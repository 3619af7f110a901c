"""Load a base model for training from any of the forms people have, through its family.

- a single-file checkpoint (`.safetensors`; `.ckpt` only with `allow_pickle`): the family is found from its key
  names (`families.family_of_checkpoint`) and reads the file;
- a diffusers folder (`model_index.json`) or a Hugging Face repo id already in the local cache: the family is
  found from its model_index.json.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .families import (
    BaseModel,
    Family,
    LoadedParts,
    family_of_checkpoint,
    family_of_diffusers,
    get_family,
    known_kinds,
)
from .files import first_non_finite
from .tokenizers_find import using_tokenizer_roots
from .weights import read_checkpoint

logger = logging.getLogger(__name__)


def _expected(family: Family, source: str, expected_family: str | None) -> None:
    """The family found must be the one the config names; checked before its parts are looked for, so a file of
    another family is named as such rather than as one missing that family's parts."""
    if expected_family and expected_family != family.name:
        wanted = get_family(expected_family)
        raise ModelError(
            f"base_model {Path(source).name} is a {family.label} model, but model_family is {expected_family}. "
            f"Use a {wanted.label} checkpoint or set model_family: {family.name} (or auto)."
        )


def _single_file(
    path: Path,
    allow_pickle: bool,
    tokenizer_path: str | None,
    dtype: torch.dtype,
    components: dict,
    expected_family: str | None = None,
) -> tuple[Family, LoadedParts]:
    state, metadata = read_checkpoint(path, allow_pickle)
    family = family_of_checkpoint(list(state))
    if family is None:
        raise ModelError(
            f"{path.name} is not a {known_kinds()} checkpoint (no denoiser + text-encoder keys in a layout "
            "we know). Is it a LoRA, a VAE or another architecture?"
        )
    _expected(family, str(path), expected_family)
    # checked here, not at the first training step: a damaged download should fail before any caching
    bad = first_non_finite(state)
    if bad:
        raise ModelError(
            f"{path.name}: weight {bad} contains NaN/inf values; the file is damaged. Re-download it."
        )
    _check_components(family, path, components)
    return family, family.load_checkpoint(
        path, state, metadata, tokenizer_path=tokenizer_path, dtype=dtype, components=components
    )


def _check_components(family: Family, path: Path, components: dict[str, str | None]) -> None:
    """A part file the family does not take is a mistake, not something to ignore silently."""
    extra = sorted(key for key, value in components.items() if value and key not in family.components)
    if extra:
        takes = ", ".join(f"{k} ({v})" for k, v in family.components.items()) or "no separate part files"
        raise ModelError(
            f"{path.name} is a {family.label} model, which takes {takes}; remove {', '.join(extra)} from the config."
        )


def _model_index(source: str, local_only: bool) -> dict[str, Any]:
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(source, local_files_only=local_only))
    except (OSError, ValueError) as exc:
        hint = " (models are not downloaded at training time; download it first)" if local_only else ""
        raise ModelError(f"cannot load diffusers model {source}: {exc}{hint}") from None


def _diffusers(
    source: str, dtype: torch.dtype, components: dict, expected_family: str | None = None
) -> tuple[Family, LoadedParts]:
    local_only = not Path(source).is_dir()
    index = _model_index(source, local_only)
    family = family_of_diffusers(source, index, local_only)
    if family is None:
        raise ModelError(
            f"{source} is a {index.get('_class_name', 'diffusers')} model; training supports {known_kinds()} pipelines."
        )
    _expected(family, source, expected_family)
    given = sorted(key for key, value in components.items() if value)
    if given:
        raise ModelError(
            f"{source} is a diffusers folder that holds every part; remove {', '.join(given)} from the config."
        )
    return family, family.load_diffusers(source, dtype=dtype, local_only=local_only)


def _open(
    source: str,
    allow_pickle: bool,
    tokenizer_path: str | None,
    dtype: torch.dtype,
    components: dict,
    expected_family: str | None = None,
) -> tuple[Family, LoadedParts]:
    path = Path(source)
    if path.is_file():
        return _single_file(path, allow_pickle, tokenizer_path, dtype, components, expected_family)
    if path.is_dir() and (path / "model_index.json").is_file():
        return _diffusers(source, dtype, components, expected_family)
    if path.is_dir():
        raise ModelError(f"{source} is a folder without model_index.json: not a diffusers model folder.")
    if path.suffix or "/" not in source:
        raise ModelError(f"base_model {source} does not exist. Give the path of a .safetensors checkpoint.")
    return _diffusers(source, dtype, components, expected_family)


def _check_vocabulary(tokenizer: Any, encoder: Any, index: int, source: str) -> None:
    """A tokenizer with more tokens than its encoder's embedding rows ends in an IndexError mid-step (every family:
    CLIP, T5, Qwen3): say it at load, naming both."""
    rows = encoder.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ModelError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '') or ''} has {len(tokenizer)} tokens but text "
            f"encoder {index + 1} of {source} has {rows} embedding rows: they come from different models. Point "
            "tokenizer_path (or the tokenizer folder beside the model) at this model's own tokenizer, or leave it "
            "empty to use the one found automatically."
        )


def load_base_model(
    source: str,
    *,
    prediction_type: str = "auto",
    allow_pickle: bool = False,
    tokenizer_path: str | None = None,
    expected_family: str | None = None,
    dtype: torch.dtype = torch.float32,
    components: dict[str, str | None] | None = None,
    tokenizer_roots: Sequence[str] = (),
) -> BaseModel:
    """Load a base model for training, its weights in `dtype`; raises ModelError with what was found when it
    cannot. `components`: files of parts the checkpoint does not hold, keyed as `Family.components`;
    `tokenizer_roots`: folders where a host keeps its tokenizers, searched by every family's tokenizer finder."""
    with using_tokenizer_roots(tokenizer_roots):
        family, parts = _open(source, allow_pickle, tokenizer_path, dtype, components or {}, expected_family)
    path = Path(source)
    for index, (tokenizer, encoder) in enumerate(zip(parts.tokenizers, parts.text_encoders)):
        # some tokenizer copies (ComfyUI's) leave the length unbounded; pipelines pad to it
        limit = getattr(encoder.config, "max_position_embeddings", tokenizer.model_max_length)
        tokenizer.model_max_length = min(tokenizer.model_max_length, limit)
        _check_vocabulary(tokenizer, encoder, index, path.name or source)
    scheduler, prediction = family.noise_scheduler(parts, prediction_type)
    resolution = family.native_resolution(parts.denoiser.config, parts.vae.config)
    logger.info("base model %s: %s, %s, %dpx", path.name or source, family.label, prediction, resolution)
    return BaseModel(
        family=family,
        denoiser=parts.denoiser,
        vae=parts.vae,
        text_encoders=parts.text_encoders,
        tokenizers=parts.tokenizers,
        noise_scheduler=scheduler,
        prediction_type=prediction,
        source=str(source),
        name=path.stem if path.exists() else source,
        resolution=resolution,
        extra={"metadata": parts.metadata},
    )


def identify_base_model(source: str, expected_family: str | None = None) -> tuple[Family | None, str, dict]:
    """(family, name, metadata) of a base model from its header or model_index.json only, without loading it;
    the family is None when neither says (a pickle checkpoint, a repo id not in the cache): `model_family` then,
    if the config names one."""
    from safetensors import SafetensorError, safe_open

    path = Path(source)
    family, metadata = None, {}
    if path.is_file() and path.suffix.lower() == ".safetensors":
        try:
            with safe_open(str(path), "pt") as fh:
                family, metadata = family_of_checkpoint(list(fh.keys())), dict(fh.metadata() or {})
        except (SafetensorError, OSError, ValueError, RuntimeError):
            pass  # the load names what is wrong with the file
    elif (path / "model_index.json").is_file() or (not path.exists() and "/" in source and not path.suffix):
        try:
            family = family_of_diffusers(source, _model_index(source, True), True)
        except ModelError:
            pass
    if family is None and expected_family:
        family = get_family(expected_family)
    return family, path.stem if path.is_file() else path.name, metadata
