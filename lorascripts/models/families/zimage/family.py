"""Z-Image (Turbo, Base): Tongyi-MAI's single-stream diffusion transformer on FLUX's 16-channel VAE, conditioned
on Qwen3-4B's second-to-last hidden states; flow matching with the model taking 1 − σ and predicting x − ε
(ZImagePipeline); LoRA files in ComfyUI's kohya names (lora_layout.py) or ai-toolkit's (diffusers_lora.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ....errors import ModelError
from ..base import BaseModel, Family, LoadedParts
from ..flow_matching import DynamicShift, FlowMatchingObjective, FlowSettings
from ..flux1.family import run_setting
from .find import PARTS
from .layout import transformer_prefix

if TYPE_CHECKING:
    from ....network.targets import Target
    from ....perf.configs import ModelShapes

logger = logging.getLogger(__name__)
TEXT_LENGTH = 512  # ZImagePipeline's max_sequence_length


class ZImage(Family):
    name = "zimage"
    label = "Z-Image"
    kind_label = "Z-Image"
    webui_version = "Z-Image"
    # AUTOMATIC1111 1.10 and Forge do not run Z-Image; Forge Neo (Forge's continuation) does
    webui_hosts = "Forge Neo"
    default_resolution = 1024
    caption_token_window = TEXT_LENGTH
    text_components = ("te",)  # the Qwen3 encoder stays frozen (no trainer ships a Qwen3 LoRA for Z-Image)
    text_lora = False  # no Z-Image loader (ComfyUI, diffusers, ai-toolkit) reads a Qwen3 LoRA
    components = {key: part.label for key, part in PARTS.items()}
    swap_blocks = (("layers", 1),)
    lora_output_formats = ("kohya", "diffusers")  # ComfyUI reads both; diffusers and ai-toolkit the second
    # ZImagePipeline's calculate_shift defaults (its scheduler does not shift dynamically; for flux_shift only)
    dynamic_shift = DynamicShift(base_seq_len=256, max_seq_len=4096, base_shift=0.5, max_shift=1.15, patch=2)
    required_imports = (
        ("diffusers", ("ZImageTransformer2DModel", "ZImagePipeline", "FlowMatchEulerDiscreteScheduler")),
        ("transformers", ("Qwen3Model", "AutoTokenizer")),
    )

    # --- files -----------------------------------------------------------------------------------------------------
    def claims_checkpoint(self, keys: set[str]) -> bool:
        return transformer_prefix(keys) is not None

    def claims_diffusers(self, source: str, index: dict[str, Any], local_only: bool) -> bool:
        return index.get("_class_name") == "ZImagePipeline"

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
                f"prediction_type {prediction_type} does not apply to Z-Image (a flow-matching model); use auto."
            )
        return FlowMatchEulerDiscreteScheduler.from_config(parts.scheduler_config or {}), "flow"

    def native_resolution(self, denoiser_config: Any, vae_config: Any) -> int:
        return self.default_resolution  # Z-Image trains and samples at 1024 px (its VAE config says 1024 too)

    # --- training --------------------------------------------------------------------------------------------------
    def objective(self, base: BaseModel, *, min_snr_gamma: float | None) -> FlowMatchingObjective:
        if min_snr_gamma:
            logger.warning(
                "min_snr_gamma is for noise-prediction models; Z-Image uses loss_weighting instead."
            )
        own = self.config_defaults(self.model_variant(base))  # what a run that left them unset resolved to
        settings = FlowSettings(
            timestep_sampling=run_setting(base, "timestep_sampling", own["timestep_sampling"]),
            discrete_flow_shift=run_setting(base, "discrete_flow_shift", own["discrete_flow_shift"]),
            sigmoid_scale=run_setting(base, "sigmoid_scale", 1.0),
            loss_weighting=run_setting(base, "loss_weighting", "none"),
            dynamic_shift=self.dynamic_shift,
        )
        if self.model_variant(base) == "turbo":
            from .variant import warn_turbo

            warn_turbo(base.name, run_setting(base, "base_weights", []))
        # the transformer takes 1 − σ: ZImagePipeline passes (1000 − timestep) / 1000
        return FlowMatchingObjective(settings, timestep_scale=-1.0, timestep_offset=1.0)

    def tokenize(self, base: BaseModel, captions: list[str]) -> list[torch.Tensor]:
        from .text import tokenize

        return tokenize(base, captions, int(run_setting(base, "text_max_length", TEXT_LENGTH)))

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

        return predict(base.denoiser, noisy, timesteps, conditioning)

    def bucket_unit(self, base: BaseModel) -> int:
        # the VAE factor x Z-Image's 2x2 patches: 16 px
        return 2 ** (len(base.vae.config.block_out_channels) - 1) * 2

    def enable_gradient_checkpointing(self, base: BaseModel, text_encoders: bool) -> None:
        base.denoiser.enable_gradient_checkpointing()

    # --- LoRA files ------------------------------------------------------------------------------------------------
    def lora_targets(self, base: BaseModel, roles: set[str], *, with_conv: bool, text: bool) -> list[Target]:
        from .lora_layout import transformer_targets

        return transformer_targets(base.denoiser, roles)

    def kohya_name(self, base: BaseModel) -> Any:
        from .lora_layout import ZImageNamer

        return ZImageNamer().name

    def lora_file_tensors(self, base: BaseModel, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from .lora_layout import qkv_rows, to_file

        return to_file(tensors, qkv_rows(base.denoiser))

    def lora_network_tensors(
        self, base: BaseModel, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        from .lora_layout import from_file, qkv_rows

        return from_file(tensors, qkv_rows(base.denoiser))

    def diffusers_lora_names(
        self, name: str, down: torch.Tensor, up: torch.Tensor
    ) -> list[tuple[str, torch.Tensor]] | None:
        from .diffusers_lora import diffusers_names

        return diffusers_names(name, down, up) or []

    def kohya_from_diffusers(
        self, modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]] | None:
        from .diffusers_lora import kohya_modules

        return kohya_modules(modules)

    def lora_metadata(self, *, v_prediction: bool, resolution: int) -> dict[str, str]:
        # musubi-tuner's modelspec architecture for Z-Image ("Z-Image" + "/lora")
        return {
            "ss_v2": "False",
            "ss_base_model_version": "zimage",
            "modelspec.architecture": "Z-Image/lora",
            "modelspec.implementation": "https://github.com/Tongyi-MAI/Z-Image",
            "modelspec.prediction_type": "flow",
        }

    def model_metadata(self, base: BaseModel) -> dict[str, str]:
        return {"ls_zimage_variant": self.model_variant(base)}

    def variant(self, name: str, metadata: dict[str, str], chosen: str = "auto") -> str:
        from .variant import variant_of

        if chosen != "auto":
            return chosen
        return metadata.get("ls_zimage_variant") or variant_of(name, metadata)

    def config_defaults(self, variant: str) -> dict[str, Any]:
        from .variant import config_defaults

        return {**super().config_defaults(variant), **config_defaults(variant)}

    def made_for(self, base_model_version: str) -> bool:
        return base_model_version.replace("-", "").replace("_", "").lower().startswith("zimage")

    def sample_defaults(self, variant: str = "") -> dict[str, float]:
        from .variant import sample_defaults

        return sample_defaults(variant)

    # --- hosts and tools -------------------------------------------------------------------------------------------
    def sampling_pipeline(self, base: BaseModel) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

        return ZImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(base.noise_scheduler.config),
            vae=base.vae,
            text_encoder=base.text_encoders[0],
            tokenizer=base.tokenizers[0],
            transformer=base.denoiser,
        )

    def webui_layers(self, base: Any) -> dict[str, tuple[int, ...]]:
        from .webui import model_layers

        return model_layers(base)

    def resolve_webui_layer(
        self, lora_name: str, layers: dict[str, tuple[int, ...]]
    ) -> tuple[str | None, str]:
        from ..flux1.webui import resolve_layer  # the same rule: the name is the layer, no sets to complete

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

        return checkpoint_shapes(self, shapes, file_bytes)

    def shapes_from_folder(self, path: Path) -> ModelShapes:
        from .estimate import folder_shapes

        return folder_shapes(self, path)

    def meta_denoiser(self, config: dict[str, Any]) -> torch.nn.Module:
        from .estimate import meta_denoiser

        return meta_denoiser(config)

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
