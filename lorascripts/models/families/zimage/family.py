"""Z-Image (Turbo, Base): Tongyi-MAI's single-stream diffusion transformer on FLUX's 16-channel VAE, conditioned
on Qwen3-4B's second-to-last hidden states; flow matching with the model taking 1 − σ and predicting x − ε
(ZImagePipeline); LoRA files in ComfyUI's kohya names (lora_layout.py) or ai-toolkit's (diffusers_lora.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..base import BaseModel
from ..dit import DiffusionTransformerFamily, run_setting
from ..flow_matching import DynamicShift, FlowMatchingObjective
from .find import PARTS

if TYPE_CHECKING:
    from ....network.targets import Target

TEXT_LENGTH = 512  # ZImagePipeline's max_sequence_length


class ZImage(DiffusionTransformerFamily):
    name = "zimage"
    pipeline_class = "ZImagePipeline"
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
    def native_resolution(self, denoiser_config: Any, vae_config: Any) -> int:
        return self.default_resolution  # Z-Image trains and samples at 1024 px (its VAE config says 1024 too)

    # --- training --------------------------------------------------------------------------------------------------
    def objective(self, base: BaseModel, *, min_snr_gamma: float | None) -> FlowMatchingObjective:
        settings = self.flow_settings(base, min_snr_gamma)
        if self.model_variant(base) == "turbo":
            from .variant import warn_turbo

            warn_turbo(base.name, run_setting(base, "base_weights", []))
        # the transformer takes 1 − σ: ZImagePipeline passes (1000 − timestep) / 1000
        return FlowMatchingObjective(settings, timestep_scale=-1.0, timestep_offset=1.0)

    def tokenize(self, base: BaseModel, captions: list[str]) -> list[torch.Tensor]:
        from .text import tokenize

        return tokenize(base, captions, int(run_setting(base, "text_max_length", TEXT_LENGTH)))

    def predict(
        self,
        base: BaseModel,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        from .predict import predict

        return predict(base.denoiser, noisy, timesteps, conditioning)

    def enable_gradient_checkpointing(self, base: BaseModel, text_encoders: bool) -> None:
        base.denoiser.enable_gradient_checkpointing()

    # --- LoRA files ------------------------------------------------------------------------------------------------
    def lora_targets(self, base: BaseModel, roles: set[str], *, with_conv: bool, text: bool) -> list[Target]:
        from .lora_layout import transformer_targets

        return transformer_targets(base.denoiser, roles)

    def kohya_name(self, base: BaseModel) -> Any:
        from .lora_layout import ZImageNamer

        return ZImageNamer().name

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

    def resolve_webui_layer(
        self, lora_name: str, layers: dict[str, tuple[int, ...]]
    ) -> tuple[str | None, str]:
        from ..flux1.webui import resolve_layer  # the same rule: the name is the layer, no sets to complete

        return resolve_layer(lora_name, layers)

    # --- the estimate's model (perf/) ------------------------------------------------------------------------------
    def meta_denoiser(self, config: dict[str, Any]) -> torch.nn.Module:
        from .estimate import meta_denoiser

        return meta_denoiser(config)
