"""FLUX.1 (dev, schnell): a rectified-flow diffusion transformer on a 16-channel VAE, conditioned on T5 states and
CLIP-L's pooled output; kohya's BFL-named LoRA files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ....errors import ModelError
from ..base import BaseModel, Family, LoadedParts
from ..flow_matching import DynamicShift, FlowMatchingObjective, FlowSettings
from ..sd.single_file import ARCH_KEY
from .find import CONFIG_KEYS, PART_LABELS
from .layout import transformer_prefix

if TYPE_CHECKING:
    from ....network.targets import Target
    from ....perf.configs import ModelShapes

logger = logging.getLogger(__name__)
DEFAULT_T5_LENGTH = {True: 512, False: 256}  # dev (guidance embedding) / schnell, as BFL and kohya use them


def run_setting(base: BaseModel, key: str, default: Any) -> Any:
    """A training setting of the run (`base.extra["config"]`, the TrainConfig), or its default."""
    value = getattr(base.extra.get("config"), key, None)
    return default if value is None else value


def is_dev(config: Any) -> bool:
    return bool(config["guidance_embeds"] if isinstance(config, dict) else config.guidance_embeds)


def arch_settings(base: BaseModel) -> dict[str, Any]:
    """What the transformer file's `lorascripts.arch` metadata says about how it was trained (the toy model:
    `{"guidance": "cfg", "text_max_length": 32}`); {} for files without it."""
    raw = base.extra.get("metadata", {}).get(ARCH_KEY)
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def t5_length(base: BaseModel) -> int:
    """T5 tokens per caption: the run's `text_max_length`, else what the file says it was trained at, else
    BFL's for dev / schnell."""
    default = arch_settings(base).get("text_max_length") or DEFAULT_T5_LENGTH[is_dev(base.denoiser.config)]
    return int(run_setting(base, "text_max_length", default))


class Flux1(Family):
    name = "flux1"
    label = "FLUX.1"
    kind_label = "FLUX.1"
    webui_version = "Flux"  # the "sd version" value of Forge's LoRA card editor (AUTOMATIC1111 1.10 has none)
    webui_hosts = "Forge"  # AUTOMATIC1111 1.10 does not run FLUX.1
    default_resolution = 1024
    caption_token_window = 512
    text_components = ("te1",)  # CLIP-L may train (lora_te1_); T5 stays frozen
    components = {CONFIG_KEYS[part]: label for part, label in PART_LABELS.items()}
    # kohya's unit: one double block or two single blocks (about half the size); 16 = 8 double + 16 single
    swap_blocks = (("transformer_blocks", 1), ("single_transformer_blocks", 2))
    # `timestep_sampling: flux_shift`: FLUX.1's scheduler_config.json (use_dynamic_shifting) and FluxPipeline
    lora_output_formats = ("kohya", "diffusers")  # diffusers, ai-toolkit, Forge and ComfyUI read both
    dynamic_shift = DynamicShift(base_seq_len=256, max_seq_len=4096, base_shift=0.5, max_shift=1.15, patch=2)
    required_imports = (
        ("diffusers", ("FluxTransformer2DModel", "FluxPipeline", "FlowMatchEulerDiscreteScheduler")),
        ("transformers", ("CLIPTextModel", "T5EncoderModel", "T5TokenizerFast")),
    )

    # --- files -----------------------------------------------------------------------------------------------------
    def claims_checkpoint(self, keys: set[str]) -> bool:
        return transformer_prefix(keys) is not None

    def claims_diffusers(self, source: str, index: dict[str, Any], local_only: bool) -> bool:
        return index.get("_class_name") == "FluxPipeline"

    def load_checkpoint(
        self,
        path: Path,
        state: dict[str, torch.Tensor],
        metadata: dict[str, str],
        *,
        tokenizer_path: str | None,
        dtype: torch.dtype,
        components: dict[str, str | None] | None = None,
    ) -> LoadedParts:
        from .load import load_single_file

        return load_single_file(self, path, state, metadata, components or {}, tokenizer_path, dtype)

    def load_diffusers(self, source: str, *, dtype: torch.dtype, local_only: bool) -> LoadedParts:
        from .load import load_diffusers

        return load_diffusers(source, dtype, local_only)

    def noise_scheduler(self, parts: LoadedParts, prediction_type: str) -> tuple[Any, str]:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if prediction_type not in ("auto", "flow"):
            raise ModelError(
                f"prediction_type {prediction_type} does not apply to FLUX.1 (a flow-matching model); use auto."
            )
        return FlowMatchEulerDiscreteScheduler.from_config(parts.scheduler_config or {}), "flow"

    def native_resolution(self, denoiser_config: Any, vae_config: Any) -> int:
        size = vae_config.get("sample_size") if isinstance(vae_config, dict) else vae_config.sample_size
        return int(size or self.default_resolution)

    # --- training --------------------------------------------------------------------------------------------------
    def objective(self, base: BaseModel, *, min_snr_gamma: float | None) -> FlowMatchingObjective:
        if min_snr_gamma:
            logger.warning("min_snr_gamma is for noise-prediction models; FLUX uses loss_weighting instead.")
        own = self.config_defaults(self.model_variant(base))  # what a run that left them unset resolved to
        settings = FlowSettings(
            timestep_sampling=run_setting(base, "timestep_sampling", own["timestep_sampling"]),
            discrete_flow_shift=run_setting(base, "discrete_flow_shift", own["discrete_flow_shift"]),
            sigmoid_scale=run_setting(base, "sigmoid_scale", 1.0),
            loss_weighting=run_setting(base, "loss_weighting", "none"),
            dynamic_shift=self.dynamic_shift,
        )
        return FlowMatchingObjective(settings)

    def tokenize(self, base: BaseModel, captions: list[str]) -> list[torch.Tensor]:
        from .text import tokenize

        return tokenize(base, captions, t5_length(base))

    def encode_tokens(
        self, base: BaseModel, ids: list[torch.Tensor], *, clip_skip: int
    ) -> dict[str, torch.Tensor]:
        from .text import encode_tokens

        return encode_tokens(base, ids)

    def predict(
        self,
        base: BaseModel,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        from .predict import predict

        return predict(
            base.denoiser, noisy, timesteps, conditioning, run_setting(base, "guidance_scale", 1.0)
        )

    def bucket_unit(self, base: BaseModel) -> int:
        # the VAE factor x FLUX's 2x2 packing: 16 px for FLUX.1's 8x VAE
        return 2 ** (len(base.vae.config.block_out_channels) - 1) * 2

    # --- LoRA files ------------------------------------------------------------------------------------------------
    def lora_targets(self, base: BaseModel, roles: set[str], *, with_conv: bool, text: bool) -> list[Target]:
        from . import lora_layout

        targets = lora_layout.transformer_targets(base.denoiser, roles)
        if text:
            targets += lora_layout.text_targets(base.text_encoders[0], roles)
        return targets

    def kohya_name(self, base: BaseModel) -> Any:
        from .lora_layout import FluxNamer

        return FluxNamer().name

    def lora_file_tensors(self, base: BaseModel, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from .lora_layout import linear1_rows, to_file

        return to_file(tensors, linear1_rows(base.denoiser))

    def lora_network_tensors(
        self, base: BaseModel, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        from .lora_layout import from_file, linear1_rows

        return from_file(tensors, linear1_rows(base.denoiser))

    def diffusers_lora_names(
        self, name: str, down: torch.Tensor, up: torch.Tensor
    ) -> list[tuple[str, torch.Tensor]] | None:
        from .diffusers_lora import diffusers_names

        return diffusers_names(name, down, up) or []

    def lora_metadata(self, *, v_prediction: bool, resolution: int) -> dict[str, str]:
        return {
            "ss_v2": "False",
            "ss_base_model_version": "flux1",
            "modelspec.architecture": "flux-1-dev/lora",
            "modelspec.implementation": "https://github.com/black-forest-labs/flux",
            "modelspec.prediction_type": "flow",
        }

    def companion_shapes(
        self, checkpoint: Path, shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, tuple[int, ...]]:
        from .webui import clip_l_shapes

        return clip_l_shapes(checkpoint, shapes)

    def kohya_from_diffusers(
        self, modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]] | None:
        from .diffusers_lora import kohya_modules

        return kohya_modules(modules)

    def sample_defaults(self, variant: str = "") -> dict[str, float]:
        return {"guidance_scale": 3.5, "steps": 20}  # FLUX.1-dev's distilled guidance (BFL's and diffusers')

    def config_defaults(self, variant: str) -> dict[str, Any]:
        # kohya sd-scripts' FLUX.1 recipe (shared/DIT_FAMILIES.md)
        return {
            **super().config_defaults(variant),
            "timestep_sampling": "shift",
            "discrete_flow_shift": 3.1582,
        }

    def model_metadata(self, base: BaseModel) -> dict[str, str]:
        variant = "dev" if is_dev(base.denoiser.config) else "schnell"
        return {"modelspec.architecture": f"flux-1-{variant}/lora"}

    def made_for(self, base_model_version: str) -> bool:
        return base_model_version.startswith("flux1")

    # --- hosts and tools -------------------------------------------------------------------------------------------
    def sampling_pipeline(self, base: BaseModel) -> Any:
        from .sampling import sampling_pipeline

        return sampling_pipeline(base, t5_length(base), arch_settings(base).get("guidance") == "cfg")

    def webui_layers(self, base: Any) -> dict[str, tuple[int, ...]]:
        from .webui import model_layers

        return model_layers(base)

    def resolve_webui_layer(
        self, lora_name: str, layers: dict[str, tuple[int, ...]]
    ) -> tuple[str | None, str]:
        from .webui import resolve_layer

        return resolve_layer(lora_name, layers)

    def reference_model(self) -> Any:
        from .webui import reference_base

        return reference_base(self)

    def checkpoint_layers(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
        from .webui import checkpoint_layers

        return checkpoint_layers(shapes)

    # --- the estimate's model (perf/) ------------------------------------------------------------------------------
    def shapes_from_checkpoint(
        self, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str], file_bytes: int
    ) -> ModelShapes:
        from .estimate import checkpoint_shapes

        return checkpoint_shapes(self, shapes, metadata, file_bytes)

    def shapes_from_folder(self, path: Path) -> ModelShapes:
        from .estimate import folder_shapes

        return folder_shapes(self, path)

    def meta_denoiser(self, config: dict[str, Any]) -> torch.nn.Module:
        from .estimate import meta_transformer

        return meta_transformer(config)

    def meta_denoiser_inputs(
        self,
        config: dict[str, Any],
        batch: int,
        latent_hw: tuple[int, int],
        text_len: int,
        dtype: torch.dtype,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        from .estimate import transformer_inputs

        return transformer_inputs(config, batch, latent_hw, text_len, dtype)

    def meta_text_encoder(
        self, config: dict[str, Any], batch: int, text_len: int
    ) -> tuple[torch.nn.Module, torch.Tensor]:
        from .estimate import meta_text_encoder

        return meta_text_encoder(config, batch, text_len)
