"""Loading FLUX.1 from the forms people have: a BFL single-file transformer with its `ae`, CLIP-L and T5 files
(found beside it or in ComfyUI's folders), ComfyUI's all-in-one checkpoint, or a diffusers folder / cached repo.

The transformer's q/k/v projections are fused after loading (diffusers' own `fuse_qkv_projections`): the fused
layers are BFL's `img_attn.qkv` / `txt_attn.qkv` / part of `linear1`, so the LoRA trains the layers that kohya's
file names (see `lora_layout.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ....errors import ModelError
from ...tokenizers_find import find_clip_tokenizer
from ...weights import load_into, read_weights, uninitialised
from ..base import LoadedParts
from ..sd.load import architecture_errors
from ..sd.single_file import text_config
from .find import CONFIG_KEYS, PART_LABELS, find_part, find_t5_tokenizer
from .layout import is_part, split_parts, t5_config, transformer_config, vae_config

logger = logging.getLogger(__name__)
FLUX_WIDTH = 3072  # the width diffusers' converter assumes when it splits the single blocks' linear1
# FLUX.1's sampling schedules (the scheduler/scheduler_config.json of the dev and schnell repos)
DEV_SCHEDULER = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
SCHNELL_SCHEDULER = {"shift": 1.0, "use_dynamic_shifting": False}


def _convert(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers' converter on a BFL state dict of any width.

    The converter splits each single block's linear1 at FLUX's own width (3072); other widths get placeholders of
    that shape (on the meta device: no memory) and their real linear1 is split here at the file's width.
    """
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    work = dict(state)  # the converter pops what it converts
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    real: dict[str, torch.Tensor] = {}
    if hidden != FLUX_WIDTH:
        for i in range(config["num_single_layers"]):
            for kind in ("weight", "bias"):
                key = f"single_blocks.{i}.linear1.{kind}"
                real[key] = work[key]
                work[key] = torch.empty((7 * FLUX_WIDTH, 0)[: work[key].dim()], device="meta")
    converted = convert_flux_transformer_checkpoint_to_diffusers(work)
    for key, tensor in real.items():
        _, index, _, kind = key.split(".")
        q, k, v, mlp = torch.split(tensor, (hidden, hidden, hidden, tensor.shape[0] - 3 * hidden))
        block = f"single_transformer_blocks.{index}."
        for name, part in (("attn.to_q", q), ("attn.to_k", k), ("attn.to_v", v), ("proj_mlp", mlp)):
            converted[f"{block}{name}.{kind}"] = part
    return converted


PROJECTIONS = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")


def _fuse_fp8(attention: Any) -> None:
    """diffusers' fuse on an attention whose projections an `fp8_base` load kept in fp8: its new Linear cannot be
    initialised in fp8, so the parts go through bf16 (exact: every e4m3 value is a bf16 value) and back."""
    from ...fp8 import to_fp8

    parts = [
        getattr(attention, n) for n in PROJECTIONS if isinstance(getattr(attention, n, None), torch.nn.Module)
    ]
    for part in parts:
        part.weight.data = part.weight.data.to(torch.bfloat16)
    attention.fuse_projections()
    for name in ("to_qkv", "to_added_qkv"):
        fused = getattr(attention, name, None)
        if fused is not None:
            fused.weight.data = to_fp8(fused.weight.data)


def fuse_projections(transformer: Any) -> Any:
    """Fuse q/k/v (and the text stream's) into one Linear each, as BFL's layout has them; drop the split ones."""
    from diffusers.models.attention import AttentionModuleMixin

    for module in transformer.modules():
        if isinstance(module, AttentionModuleMixin) and module._supports_qkv_fusion:
            if getattr(getattr(module, "to_q", None), "weight", torch.empty(0)).dtype == torch.float8_e4m3fn:
                _fuse_fp8(module)
            else:
                module.fuse_projections()
    for module in transformer.modules():
        if getattr(module, "fused_projections", False):
            for name in PROJECTIONS:
                if hasattr(module, name) and isinstance(getattr(module, name), torch.nn.Module):
                    delattr(module, name)
    return transformer


def load_transformer(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> Any:
    from diffusers import FluxTransformer2DModel

    config = transformer_config({k: tuple(v.shape) for k, v in state.items()})
    model = uninitialised(FluxTransformer2DModel, **config)
    load_into(model, _convert(state, config), "FLUX transformer", path, dtype)
    return fuse_projections(model.eval())


def load_vae(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae = uninitialised(AutoencoderKL, **vae_config({k: tuple(v.shape) for k, v in state.items()}))
    load_into(vae, convert_ldm_vae_checkpoint(state, vae.config), "VAE", path, dtype)
    return vae.eval()


def _clip(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**text_config({k: tuple(v.shape) for k, v in state.items()}, "", "clip_l", {}, 0))
    model = uninitialised(CLIPTextModel, config)
    load_into(model, state, "CLIP-L text encoder", path, dtype, text=True)
    return model.eval()


def _t5(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> Any:
    from transformers import T5Config, T5EncoderModel

    embed = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
    state = {**state, "shared.weight": embed, "encoder.embed_tokens.weight": embed}
    model = uninitialised(
        T5EncoderModel, T5Config(**t5_config({k: tuple(v.shape) for k, v in state.items()}))
    )
    load_into(model, state, "T5 text encoder", path, dtype)
    return model.eval()


def _part_state(
    part: str, given: str | None, path: Path, parts: dict
) -> tuple[dict[str, torch.Tensor], Path]:
    if part in parts and not given:
        return parts[part], path
    file = find_part(part, given, path)
    state, _ = read_weights(file, f"FLUX {PART_LABELS[part]}")
    if not is_part({k: () for k in state}, part):
        raise ModelError(
            f"{file.name} is not a {PART_LABELS[part]} file (its keys start with {next(iter(state))})."
        )
    return state, file


def load_single_file(
    family: Any,
    path: Path,
    state: dict[str, torch.Tensor],
    metadata: dict[str, str],
    components: dict[str, str | None],
    tokenizer_path: str | None,
    dtype: torch.dtype,
) -> LoadedParts:
    """Transformer, VAE, CLIP-L and T5 of a BFL-layout FLUX file (+ the part files it needs)."""
    parts = split_parts(state)
    loaded: dict[str, Any] = {}
    for part, build in (("vae", load_vae), ("clip_l", _clip), ("t5", _t5)):
        part_state, file = _part_state(part, components.get(CONFIG_KEYS[part]), path, parts)
        with architecture_errors(file, family):
            loaded[part] = build(part_state, file, dtype)
    with architecture_errors(path, family):
        transformer = load_transformer(parts["transformer"], path, dtype)
    tokenizers = [find_clip_tokenizer(tokenizer_path, path), find_t5_tokenizer(path)]
    encoders = [loaded["clip_l"], loaded["t5"]]
    return LoadedParts(
        transformer, loaded["vae"], encoders, tokenizers, scheduler_config(transformer), metadata
    )


def scheduler_config(transformer: Any) -> dict[str, Any]:
    return dict(DEV_SCHEDULER if transformer.config.guidance_embeds else SCHNELL_SCHEDULER)


def load_diffusers(source: str, dtype: torch.dtype, local_only: bool) -> LoadedParts:
    """Transformer, VAE, CLIP-L, T5 and their tokenizers from a FluxPipeline folder / cached repo."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    kw: dict[str, Any] = {"local_files_only": True} if local_only else {}
    try:
        transformer = FluxTransformer2DModel.from_pretrained(
            source, subfolder="transformer", torch_dtype=dtype, **kw
        )
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kw)
        encoders = [
            CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **kw),
            T5EncoderModel.from_pretrained(source, subfolder="text_encoder_2", dtype=dtype, **kw),
        ]
        tokenizers = [
            CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw),
            T5TokenizerFast.from_pretrained(source, subfolder="tokenizer_2", **kw),
        ]
        scheduler = dict(FlowMatchEulerDiscreteScheduler.load_config(source, subfolder="scheduler", **kw))
    except (OSError, ValueError) as exc:
        hint = " (models are not downloaded at training time; download it first)" if local_only else ""
        raise ModelError(f"cannot load FLUX diffusers model {source}: {exc}{hint}") from None
    return LoadedParts(fuse_projections(transformer.eval()), vae, encoders, tokenizers, scheduler, {})
