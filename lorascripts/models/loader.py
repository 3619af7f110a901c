"""Load a Stable Diffusion base model (SD1.x, SD2.x, SDXL) for training, from any of the forms people have.

- a single-file checkpoint in the original layout (`.safetensors`; `.ckpt` only with `allow_pickle`), the
  architecture read from its shapes (single_file.py) and the weights converted by diffusers' own converters;
- a diffusers folder (`model_index.json`) or a Hugging Face repo id already in the local cache.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .family import ModelFamily, family_from_keys
from .files import PICKLE_SUFFIXES, first_non_finite, read_safetensors
from .ldm_names import text_encoder_layouts
from .single_file import ARCH_KEY, text_config, unet_config, vae_config
from .tokenizers_find import find_clip_tokenizer, openclip_variant

logger = logging.getLogger(__name__)


@dataclass
class BaseModel:
    """The frozen parts of a base model and what training needs to know about them."""

    family: ModelFamily
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    noise_scheduler: Any
    prediction_type: str
    source: str
    name: str
    resolution: int
    extra: dict[str, Any] = field(default_factory=dict)


def sd_noise_scheduler(prediction_type: str = "epsilon") -> Any:
    """The noise schedule every SD1/SD2/SDXL checkpoint was trained with."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def _read_checkpoint(path: Path, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path, "checkpoint")
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


@contextmanager
def _architecture_errors(path: Path, family: ModelFamily) -> Iterator[None]:
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
    family: ModelFamily,
    arch: dict,
    tokenizer_path: str | None,
    dtype: torch.dtype,
) -> tuple[list[Any], list[Any]]:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    encoders, tokenizers = [], []
    clip_tok = find_clip_tokenizer(tokenizer_path, path)
    for index, (prefix, layout) in enumerate(text_encoder_layouts(family.value)):
        config = CLIPTextConfig(**text_config(shapes, prefix, layout, arch, index))
        if layout == "clip_l":
            model = _uninitialised(CLIPTextModel, config)
            weights = convert_ldm_clip_checkpoint(state, remove_prefix=prefix)
            tokenizers.append(clip_tok)
        else:
            model = _uninitialised(
                CLIPTextModelWithProjection if family is ModelFamily.SDXL else CLIPTextModel, config
            )
            weights = convert_open_clip_checkpoint(model, state, prefix=prefix)
            tokenizers.append(openclip_variant(clip_tok))
        _check_vocabulary(tokenizers[-1], config.vocab_size, index, path)
        _load_into(model, weights, f"text encoder {index + 1}", path, dtype, text=True)
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


def _load_single_file(
    path: Path, allow_pickle: bool, tokenizer_path: str | None, dtype: torch.dtype
) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    state, metadata = _read_checkpoint(path, allow_pickle)
    family = family_from_keys(list(state))
    if family is None or not any(k.startswith("model.diffusion_model.") for k in state):
        raise ModelError(
            f"{path.name} is not a Stable Diffusion 1.x/2.x/XL checkpoint (no U-Net + CLIP text encoder keys "
            "in the original layout). Is it a LoRA, a VAE or another architecture?"
        )
    # checked here, not at the first training step: a damaged download should fail before any caching
    bad = first_non_finite(state)
    if bad:
        raise ModelError(
            f"{path.name}: weight {bad} contains NaN/inf values; the file is damaged. Re-download it."
        )
    with _architecture_errors(path, family):
        arch = json.loads(metadata.get(ARCH_KEY, "{}"))
        arch = arch if isinstance(arch, dict) else {}
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if family is ModelFamily.SDXL:
            arch.setdefault("pooled_dim", shapes["conditioner.embedders.1.model.text_projection"][1])
        unet = _uninitialised(UNet2DConditionModel, **unet_config(shapes, family, arch))
        _load_into(unet, convert_ldm_unet_checkpoint(state, unet.config), "U-Net", path, dtype)
        vae = _uninitialised(AutoencoderKL, **vae_config(shapes, family, arch))
        _load_into(vae, convert_ldm_vae_checkpoint(state, vae.config), "VAE", path, dtype)
        encoders, tokenizers = _text_encoders(path, state, shapes, family, arch, tokenizer_path, dtype)
    return {
        "family": family,
        "unet": unet,
        "vae": vae,
        "text_encoders": encoders,
        "tokenizers": tokenizers,
        "scheduler_config": None,
        "metadata": metadata,
    }


def _uninitialised(cls: Callable[..., torch.nn.Module], *args: Any, **kwargs: Any) -> torch.nn.Module:
    """Build a model with its parameters on the meta device: `_load_into` assigns every one from the file.

    Random initialisation of SD1.5's ~1.1 B parameters only to overwrite them took seconds and a second full
    copy of the weights in memory; buffers stay real (position ids are not always in the file).
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return cls(*args, **kwargs)


def _load_into(
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
    # assign: the parameters are on the meta device (see _uninitialised); floating weights take the dtype the run
    # computes in now (no fp32 copy first, and no cast later: diffusers warns on every `.to(dtype)`)
    cast = {k: v.to(dtype if own[k].is_floating_point() else own[k].dtype) for k, v in weights.items()}
    module.load_state_dict(cast, strict=False, assign=True)


def _load_diffusers(source: str, dtype: torch.dtype) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    local = Path(source).is_dir()
    kw: dict[str, Any] = {} if local else {"local_files_only": True}
    # the run's dtype whatever the files hold (half-precision folders are common)
    kw["torch_dtype"] = dtype
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **kw)
        text_kw = {**{k: v for k, v in kw.items() if k != "torch_dtype"}, "dtype": dtype}
        tok_kw = {k: v for k, v in kw.items() if k != "torch_dtype"}
        encoders = [CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **text_kw)]
        tokenizers = [CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **tok_kw)]
        root = Path(source) if local else None
        if (root and (root / "text_encoder_2").is_dir()) or (not local and unet.config.addition_embed_type):
            encoders.append(
                CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder_2", **kw)
            )
            tokenizers.append(CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", **kw))
    except (OSError, ValueError) as exc:
        hint = "" if local else " (models are not downloaded at training time; download it first)"
        raise ModelError(f"cannot load diffusers model {source}: {exc}{hint}") from None
    if len(encoders) == 2:
        family = ModelFamily.SDXL
    else:
        family = ModelFamily.SD2 if encoders[0].config.hidden_act == "gelu" else ModelFamily.SD1
    return {
        "family": family,
        "unet": unet,
        "vae": vae,
        "text_encoders": encoders,
        "tokenizers": tokenizers,
        "scheduler_config": _scheduler_config(source, tok_kw),
        "metadata": {},
    }


def _scheduler_config(source: str, kw: dict[str, Any]) -> dict[str, Any] | None:
    from diffusers import DDPMScheduler

    try:
        return dict(DDPMScheduler.load_config(source, subfolder="scheduler", **kw))
    except (OSError, ValueError):
        return None


def _prediction_type(requested: str, family: ModelFamily, loaded: dict[str, Any]) -> str:
    if requested != "auto":
        return requested
    configured = (loaded.get("scheduler_config") or {}).get("prediction_type")
    meta = loaded.get("metadata", {}).get("lorascripts.prediction_type")
    if meta or configured:
        return meta or configured
    # single-file SD2: 768-v models (96x96 latents) are v-prediction, 512 base models epsilon
    if family is ModelFamily.SD2 and loaded["unet"].config.sample_size >= 96:
        return "v_prediction"
    return "epsilon"


def load_base_model(
    source: str,
    *,
    prediction_type: str = "auto",
    allow_pickle: bool = False,
    tokenizer_path: str | None = None,
    expected_family: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> BaseModel:
    """Load a base model for training, its weights in `dtype`; raises ModelError with what was found when it
    cannot."""
    from diffusers import DDPMScheduler

    path = Path(source)
    if path.is_file():
        loaded = _load_single_file(path, allow_pickle, tokenizer_path, dtype)
    elif path.is_dir() and (path / "model_index.json").is_file():
        loaded = _load_diffusers(source, dtype)
    elif path.is_dir():
        raise ModelError(f"{source} is a folder without model_index.json: not a diffusers model folder.")
    elif path.suffix or "/" not in source:
        raise ModelError(f"base_model {source} does not exist. Give the path of a .safetensors checkpoint.")
    else:
        loaded = _load_diffusers(source, dtype)
    family: ModelFamily = loaded["family"]
    if expected_family and expected_family != family.value:
        raise ModelError(
            f"base_model {path.name} is a {family.label} model, but model_family is {expected_family}. "
            f"Use a {expected_family} checkpoint or set model_family: {family.value} (or auto)."
        )
    for tokenizer, encoder in zip(loaded["tokenizers"], loaded["text_encoders"]):
        # some tokenizer copies (ComfyUI's) leave the length unbounded; pipelines pad to it
        tokenizer.model_max_length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
    prediction = _prediction_type(prediction_type, family, loaded)
    if loaded.get("scheduler_config"):
        scheduler = DDPMScheduler.from_config(loaded["scheduler_config"], prediction_type=prediction)
    else:
        scheduler = sd_noise_scheduler(prediction)
    resolution = loaded["unet"].config.sample_size * 2 ** (len(loaded["vae"].config.block_out_channels) - 1)
    logger.info("base model %s: %s, %s, %dpx", path.name or source, family.label, prediction, resolution)
    return BaseModel(
        family=family,
        unet=loaded["unet"],
        vae=loaded["vae"],
        text_encoders=loaded["text_encoders"],
        tokenizers=loaded["tokenizers"],
        noise_scheduler=scheduler,
        prediction_type=prediction,
        source=str(source),
        name=path.stem if path.exists() else source,
        resolution=resolution,
        extra={"metadata": loaded.get("metadata", {})},
    )
