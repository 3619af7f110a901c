"""Loading Stable Diffusion models (SD1.x, SD2.x, SDXL) from the forms people have.

- a single-file checkpoint in the original layout, the architecture read from its shapes (single_file.py) and the
  weights converted by diffusers' own converters;
- a diffusers folder (`model_index.json`) or a Hugging Face repo id already in the local cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ....errors import ModelError
from ...tokenizers_find import find_clip_tokenizer, openclip_variant
from ...weights import load_into, uninitialised
from ..base import LoadedParts
from .single_file import ARCH_KEY, text_config, unet_config, vae_config

if TYPE_CHECKING:
    from .family import StableDiffusionFamily


@contextmanager
def architecture_errors(path: Path, family: StableDiffusionFamily) -> Iterator[None]:
    """Inferring an architecture from shapes and converting names index into the file: a file that does not
    have what a standard checkpoint has surfaces as KeyError/StopIteration/...; say so once, here."""
    hint = f"The file is incomplete (re-download it) or not a standard {family.label} checkpoint."
    try:
        yield
    except KeyError as exc:
        raise ModelError(
            f"{path.name}: cannot work out the architecture, weight {exc} is missing. {hint}"
        ) from None
    except (StopIteration, IndexError, ValueError, TypeError, json.JSONDecodeError) as exc:
        reason = str(exc) or "an expected weight is missing"
        raise ModelError(f"{path.name}: cannot work out the architecture ({reason}). {hint}") from None


def _text_encoders(
    path: Path,
    state: dict,
    shapes: dict,
    family: StableDiffusionFamily,
    arch: dict,
    tokenizer_path: str | None,
    dtype: torch.dtype,
) -> tuple[list[Any], list[Any]]:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    encoders, tokenizers = [], []
    clip_tok = find_clip_tokenizer(tokenizer_path, path)
    for index, (prefix, layout) in enumerate(family.text_layouts):
        config = CLIPTextConfig(**text_config(shapes, prefix, layout, arch, index))
        if layout == "clip_l":
            model = uninitialised(CLIPTextModel, config)
            weights = convert_ldm_clip_checkpoint(state, remove_prefix=prefix)
            tokenizers.append(clip_tok)
        else:
            model = uninitialised(
                CLIPTextModelWithProjection if family.projected_second_encoder else CLIPTextModel, config
            )
            weights = convert_open_clip_checkpoint(model, state, prefix=prefix)
            tokenizers.append(openclip_variant(clip_tok))
        _check_vocabulary(tokenizers[-1], config.vocab_size, index, path)
        load_into(model, weights, f"text encoder {index + 1}", path, dtype, text=True)
        encoders.append(model)
    return encoders, tokenizers


def _check_vocabulary(tokenizer: Any, rows: int, index: int, path: Path) -> None:
    """A tokenizer with more tokens than the encoder's embedding ends in an IndexError mid-step: say it now."""
    if len(tokenizer) > rows:
        raise ModelError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '')} has {len(tokenizer)} tokens but text encoder "
            f"{index + 1} of {path.name} has {rows}: they come from different models. Point tokenizer_path at "
            "this checkpoint's CLIP tokenizer (SD1/SDXL: the files of openai/clip-vit-large-patch14), or leave it "
            "empty to use the one found automatically."
        )


def load_single_file(
    family: StableDiffusionFamily,
    path: Path,
    state: dict[str, torch.Tensor],
    metadata: dict[str, str],
    tokenizer_path: str | None,
    dtype: torch.dtype,
) -> LoadedParts:
    """U-Net, VAE and CLIP text encoders of an original-layout checkpoint of `family`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    with architecture_errors(path, family):
        arch = json.loads(metadata.get(ARCH_KEY, "{}"))
        arch = arch if isinstance(arch, dict) else {}
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        family.complete_arch(arch, shapes)
        unet = uninitialised(UNet2DConditionModel, **unet_config(shapes, family, arch))
        load_into(unet, convert_ldm_unet_checkpoint(state, unet.config), "U-Net", path, dtype)
        vae = uninitialised(AutoencoderKL, **vae_config(shapes, family, arch))
        load_into(vae, convert_ldm_vae_checkpoint(state, vae.config), "VAE", path, dtype)
        encoders, tokenizers = _text_encoders(path, state, shapes, family, arch, tokenizer_path, dtype)
    return LoadedParts(unet, vae, encoders, tokenizers, None, metadata)


def load_diffusers(source: str, dtype: torch.dtype, local_only: bool) -> LoadedParts:
    """U-Net, VAE, text encoders and tokenizers of a diffusers folder or cached repo, in `dtype`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    kw: dict[str, Any] = {"local_files_only": True} if local_only else {}
    try:
        # the run's dtype whatever the files hold (half-precision folders are common)
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kw)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kw)
        encoders = [CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **kw)]
        tokenizers = [CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)]
        if unet.config.addition_embed_type:
            encoders.append(
                CLIPTextModelWithProjection.from_pretrained(
                    source, subfolder="text_encoder_2", torch_dtype=dtype, **kw
                )
            )
            tokenizers.append(CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", **kw))
    except (OSError, ValueError) as exc:
        hint = " (models are not downloaded at training time; download it first)" if local_only else ""
        raise ModelError(f"cannot load diffusers model {source}: {exc}{hint}") from None
    return LoadedParts(unet, vae, encoders, tokenizers, _scheduler_config(source, kw), {})


def _scheduler_config(source: str, kw: dict[str, Any]) -> dict[str, Any] | None:
    from diffusers import DDPMScheduler

    try:
        return dict(DDPMScheduler.load_config(source, subfolder="scheduler", **kw))
    except (OSError, ValueError):
        return None


def prediction_type(requested: str, family: StableDiffusionFamily, parts: LoadedParts) -> str:
    """`requested`, or (auto) what the file's metadata / scheduler config says, else the family's rule."""
    if requested != "auto":
        return requested
    configured = (parts.scheduler_config or {}).get("prediction_type")
    meta = parts.metadata.get("lorascripts.prediction_type")
    if meta or configured:
        return meta or configured
    return family.default_prediction_type(parts.denoiser.config)
