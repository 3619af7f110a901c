"""What SD1.x, SD2.x and SDXL share: a U-Net, CLIP text encoders, a 4-channel VAE and the DDPM objective.

The three family modules (`families/sd1.py`, `sd2.py`, `sdxl.py`) subclass `StableDiffusionFamily` and set what
differs: the text-encoder layout of their single files, head-count rules, the VAE scale, metadata strings, and
(SDXL) the size conditioning and pooled text embedding.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..base import BaseModel, Family, LoadedParts
from .objective import DDPMObjective, scheduler_from_config

if TYPE_CHECKING:
    from ....network.targets import Target
    from ....perf.configs import Header, ModelShapes


class StableDiffusionFamily(Family):
    """A latent diffusion U-Net conditioned on CLIP hidden states, trained on the DDPM schedule."""

    text_layouts: tuple[tuple[str, str], ...]  # (state-dict prefix in a single file, "clip_l" | "openclip")
    fixed_unet_heads: int | None = None  # SD1's 8 heads everywhere; else 64 channels a head
    per_block_transformer_depth: bool = False  # SDXL's transformer_layers_per_block
    projected_second_encoder: bool = False  # SDXL's te2 is CLIPTextModelWithProjection (pooled output)
    vae_scaling_factor: float = 0.18215
    version_prefix: str = "sd_v1"  # ss_base_model_version of this family's LoRAs starts so
    caption_token_window = 75
    kind_label = "Stable Diffusion 1.x/2.x/XL"
    required_imports = (
        ("diffusers", ("UNet2DConditionModel", "DDPMScheduler", "DDIMScheduler", "StableDiffusionPipeline")),
        ("diffusers", ("StableDiffusionXLPipeline",)),
        ("transformers", ("CLIPTextModel", "CLIPTokenizer", "CLIPTextModelWithProjection")),
    )
    reference_unet: dict[str, Any]  # the diffusers config of the family's standard U-Net (toolbox, self-test)
    reference_texts: tuple[dict[str, Any], ...]  # and of its text encoders
    pipeline_class: str = "StableDiffusionPipeline"  # the diffusers class that draws preview samples
    webui_sd2_names: bool = False  # the WebUI's name conversion has an SD2 branch (OpenCLIP text encoder)

    # --- files -----------------------------------------------------------------------------------------------------
    def claims_checkpoint(self, keys: set[str]) -> bool:
        return any(k.startswith("model.diffusion_model.") for k in keys) and any(
            k.startswith(self.text_layouts[-1][0]) for k in keys
        )

    def complete_arch(self, arch: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
        """Fill what the loader needs and the shapes alone do not say (SDXL: the pooled text width)."""

    def load_checkpoint(
        self,
        path: Path,
        state: dict[str, torch.Tensor],
        metadata: dict[str, str],
        *,
        tokenizer_path: str | None,
        dtype: torch.dtype,
        components: dict[str, str | None] | None = None,  # an SD file holds every part
    ) -> LoadedParts:
        from .load import load_single_file

        return load_single_file(self, path, state, metadata, tokenizer_path, dtype)

    def load_diffusers(self, source: str, *, dtype: torch.dtype, local_only: bool) -> LoadedParts:
        from .load import load_diffusers

        return load_diffusers(source, dtype, local_only)

    def default_prediction_type(self, unet_config: Any) -> str:
        """The prediction type of a file that does not say (auto)."""
        return "epsilon"

    def noise_scheduler(self, parts: LoadedParts, prediction_type: str) -> tuple[Any, str]:
        from .load import prediction_type as resolve

        prediction = resolve(prediction_type, self, parts)
        return scheduler_from_config(parts.scheduler_config, prediction), prediction

    def native_resolution(self, denoiser_config: Any, vae_config: Any) -> int:
        sample = _get(denoiser_config, "sample_size")
        return int(sample) * 2 ** (len(_get(vae_config, "block_out_channels")) - 1)

    # --- training --------------------------------------------------------------------------------------------------
    def objective(self, base: BaseModel, *, min_snr_gamma: float | None) -> DDPMObjective:
        return DDPMObjective(base.noise_scheduler, base.prediction_type, min_snr_gamma)

    def tokenize(self, base: BaseModel, captions: list[str]) -> list[torch.Tensor]:
        from .text import tokenize

        return tokenize(base, captions)

    def encode_tokens(
        self, base: BaseModel, ids: list[torch.Tensor], *, clip_skip: int
    ) -> dict[str, torch.Tensor]:
        from .text import encode_tokens

        hidden, pooled = encode_tokens(base, ids, clip_skip=clip_skip)
        return {"hidden": hidden} if pooled is None else {"hidden": hidden, "pooled": pooled}

    def clip_skip_limit(self, base: BaseModel) -> int:
        return min(te.config.num_hidden_layers for te in base.text_encoders)

    def predict(
        self,
        base: BaseModel,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        unet = base.denoiser
        dtype = next(unet.parameters()).dtype
        extra = self.added_conditions(conditioning, dtype)
        return unet(noisy.to(dtype), timesteps, conditioning["hidden"].to(dtype), **extra).sample

    def added_conditions(self, conditioning: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, Any]:
        """The U-Net's extra keyword inputs (SDXL's pooled text and size ids); none for SD1/SD2."""
        return {}

    def bucket_unit(self, base: BaseModel) -> int:
        # the VAE factor x the U-Net's own downsampling: small models allow finer steps
        vae_factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
        return vae_factor * 2 ** (len(base.denoiser.config.block_out_channels) - 1)

    # --- LoRA files ------------------------------------------------------------------------------------------------
    def full_attention_text(self, component: str) -> bool:
        """Whether the WebUI applies this text encoder's q/k/v/out only as a set (OpenCLIP encoders)."""
        index = self.text_components.index(component)
        return self.text_layouts[index][1] == "openclip"

    def lora_targets(self, base: BaseModel, roles: set[str], *, with_conv: bool, text: bool) -> list[Target]:
        from .targets import text_targets, unet_targets

        targets = unet_targets(base.denoiser, roles, with_conv=with_conv)
        if text:
            for component, encoder in zip(self.text_components, base.text_encoders):
                full = self.full_attention_text(component)
                targets += text_targets(encoder, component, roles, needs_full_attention=full)
        return targets

    def kohya_name(self, base: BaseModel) -> Any:
        from .naming import KohyaNamer

        return KohyaNamer(base.denoiser.config, ldm_unet_names=self.per_block_transformer_depth).name

    def made_for(self, base_model_version: str) -> bool:
        return base_model_version.startswith(self.version_prefix)

    # --- hosts and tools -------------------------------------------------------------------------------------------
    def sampling_pipeline(self, base: BaseModel) -> Any:
        from .pipeline import build_pipeline

        return build_pipeline(self, base)

    def webui_layers(self, base: Any) -> dict[str, tuple[int, ...]]:
        from .ldm_names import original_layout_shapes

        return original_layout_shapes(base)

    def resolve_webui_layer(
        self, lora_name: str, layers: dict[str, tuple[int, ...]]
    ) -> tuple[str | None, str]:
        from .webui_names import resolve_layer

        return resolve_layer(lora_name, layers, self.webui_sd2_names)

    def reference_model(self) -> Any:
        from .reference import meta_base

        return meta_base(self)

    def checkpoint_layers(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
        from .reference import layer_keys

        return layer_keys(shapes)

    def shapes_from_checkpoint(self, header: Header, components: dict[str, str | None]) -> ModelShapes:
        from .estimate import checkpoint_shapes

        return checkpoint_shapes(self, header)  # every part is in the file (the loader takes no part files)

    def shapes_from_folder(self, path: Path) -> ModelShapes:
        from .estimate import folder_shapes

        return folder_shapes(self, path)

    def meta_denoiser(self, config: dict[str, Any]) -> torch.nn.Module:
        from .estimate import meta_unet

        return meta_unet(config)

    def meta_denoiser_inputs(
        self,
        config: dict[str, Any],
        batch: int,
        latent_hw: tuple[int, int],
        text_len: int,
        dtype: torch.dtype,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        from .estimate import unet_inputs

        return unet_inputs(config, batch, latent_hw, text_len, dtype)

    def meta_text_encoder(
        self, config: dict[str, Any], batch: int, text_len: int
    ) -> tuple[torch.nn.Module, torch.Tensor]:
        from .estimate import meta_text_encoder

        return meta_text_encoder(config, batch, text_len)


def _get(config: Any, key: str) -> Any:
    return config[key] if isinstance(config, dict) else getattr(config, key)
