"""Loading Z-Image from the forms people have: the transformer file of ComfyUI's `models/diffusion_models`
(original layout, bf16 or fp8, bare or `model.diffusion_model.`-prefixed) with the Qwen3 text encoder and FLUX VAE
files (found beside it or in ComfyUI's folders, find.py), or a diffusers `ZImagePipeline` folder / cached repo.

The original layout goes through diffusers' own converter (`convert_z_image_transformer_checkpoint_to_diffusers`:
fused `attention.qkv` split into to_q/to_k/to_v, `out` -> `to_out.0`, ...); training runs on diffusers'
`ZImageTransformer2DModel`, the Qwen3 encoder is transformers' `Qwen3Model`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ....errors import ModelError
from ...weights import load_into, read_weights, uninitialised
from ..base import LoadedParts
from ..flux1.layout import transformer_prefix as flux_prefix
from ..flux1.load import load_vae
from ..sd.load import architecture_errors
from .find import PARTS, find_part, find_qwen_tokenizer, with_chat_template
from .layout import is_original, qwen3_config, qwen3_prefix, transformer_config, transformer_state
from .variant import scheduler_config, variant_of

logger = logging.getLogger(__name__)


def load_transformer(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> Any:
    from diffusers import ZImageTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    config = transformer_config({k: tuple(v.shape) for k, v in state.items()})
    model = uninitialised(ZImageTransformer2DModel, **config)
    weights = (
        convert_z_image_transformer_checkpoint_to_diffusers(dict(state)) if is_original(state) else state
    )
    load_into(model, weights, "Z-Image transformer", path, dtype)
    return model.eval()


def load_qwen3(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> Any:
    from transformers import Qwen3Config, Qwen3Model

    prefix = qwen3_prefix(set(state))
    if prefix is None:
        raise ModelError(
            f"{path.name} is not a Qwen3 text encoder (no layers.0.self_attn.q_norm.weight; its keys start with "
            f"{next(iter(state), 'nothing')}). Z-Image needs Qwen3-4B (qwen_3_4b.safetensors)."
        )
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    model = uninitialised(
        Qwen3Model, Qwen3Config(**qwen3_config({k: tuple(v.shape) for k, v in own.items()}))
    )
    load_into(model, own, "Qwen3 text encoder", path, dtype)
    return model.eval()


def _part_state(part: str, given: str | None, path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    file = find_part(part, given, path)
    state, _ = read_weights(file, f"Z-Image {PARTS[part].label}")
    return state, file


def check_tokenizer(tokenizer: Any, encoder: Any, where: str) -> None:
    """A tokenizer whose ids run past the encoder's embedding rows is another model's (ModelError naming both)."""
    rows = encoder.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ModelError(
            f"the Qwen3 tokenizer ({len(tokenizer)} tokens, {tokenizer.name_or_path or 'found'}) does not match "
            f"the text encoder {where} ({rows} embedding rows): they are from different models. Use the "
            "tokenizer of this text encoder (tokenizer_path)."
        )


def load_single_file(
    family: Any,
    path: Path,
    state: dict[str, torch.Tensor],
    metadata: dict[str, str],
    components: dict[str, str | None],
    tokenizer_path: str | None,
    dtype: torch.dtype,
) -> LoadedParts:
    """Transformer, FLUX VAE and Qwen3 encoder of a Z-Image transformer file (+ the part files it needs)."""
    te_state, te_file = _part_state("text_encoder", components.get("text_encoder"), path)
    if flux_prefix(set(te_state)) is not None or transformer_state_or_none(te_state) is not None:
        raise ModelError(
            f"{te_file.name} is a diffusion transformer, not the Qwen3 text encoder Z-Image needs."
        )
    with architecture_errors(te_file, family):
        encoder = load_qwen3(te_state, te_file, dtype)
    vae_state, vae_file = _part_state("vae", components.get("vae"), path)
    if "encoder.conv_in.weight" not in vae_state:
        raise ModelError(
            f"{vae_file.name} is not a VAE file in the original layout (no encoder.conv_in.weight)."
        )
    with architecture_errors(vae_file, family):
        vae = load_vae(vae_state, vae_file, dtype)
    with architecture_errors(path, family):
        transformer = load_transformer(transformer_state(state), path, dtype)
    tokenizer = find_qwen_tokenizer(tokenizer_path, [path, te_file])
    check_tokenizer(tokenizer, encoder, te_file.name)
    variant = variant_of(path.name, metadata)
    meta = {**metadata, "ls_zimage_variant": variant}
    return LoadedParts(transformer, vae, [encoder], [tokenizer], scheduler_config(variant), meta)


def transformer_state_or_none(state: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return transformer_state(state)
    except ModelError:
        return None


def load_diffusers(source: str, dtype: torch.dtype, local_only: bool) -> LoadedParts:
    """Transformer, VAE, Qwen3 encoder and tokenizer from a ZImagePipeline folder / cached repo."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel
    from transformers import AutoModel, AutoTokenizer

    kw: dict[str, Any] = {"local_files_only": True} if local_only else {}
    try:
        transformer = ZImageTransformer2DModel.from_pretrained(
            source, subfolder="transformer", torch_dtype=dtype, **kw
        )
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kw)
        encoder = AutoModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **kw)
        tokenizer = with_chat_template(AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **kw))
        scheduler = dict(FlowMatchEulerDiscreteScheduler.load_config(source, subfolder="scheduler", **kw))
    except (OSError, ValueError) as exc:
        hint = " (models are not downloaded at training time; download it first)" if local_only else ""
        raise ModelError(f"cannot load Z-Image diffusers model {source}: {exc}{hint}") from None
    check_tokenizer(tokenizer, encoder, f"of {source}")
    variant = variant_of(Path(source).name, {})
    return LoadedParts(
        transformer.eval(), vae, [encoder.eval()], [tokenizer], scheduler, {"ls_zimage_variant": variant}
    )
