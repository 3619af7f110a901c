"""FLUX.1 (dev, schnell): a rectified-flow diffusion transformer on a 16-channel VAE, conditioned on T5 states and
CLIP-L's pooled output; kohya's BFL-named LoRA files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..base import BaseModel
from ..dit import DiffusionTransformerFamily, run_setting
from ..flow_matching import DynamicShift, FlowMatchingObjective
from ..sd.single_file import ARCH_KEY
from .find import CONFIG_KEYS, PART_LABELS

if TYPE_CHECKING:
    from ....network.targets import Target

DEFAULT_T5_LENGTH = {True: 512, False: 256}  # dev (guidance embedding) / schnell, as BFL and kohya use them


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


class Flux1(DiffusionTransformerFamily):
    name = "flux1"
    pipeline_class = "FluxPipeline"
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
    def native_resolution(self, denoiser_config: Any, vae_config: Any) -> int:
        size = vae_config.get("sample_size") if isinstance(vae_config, dict) else vae_config.sample_size
        return int(size or self.default_resolution)

    # --- training --------------------------------------------------------------------------------------------------
    def objective(self, base: BaseModel, *, min_snr_gamma: float | None) -> FlowMatchingObjective:
        return FlowMatchingObjective(self.flow_settings(base, min_snr_gamma))

    def tokenize(self, base: BaseModel, captions: list[str]) -> list[torch.Tensor]:
        from .text import tokenize

        return tokenize(base, captions, t5_length(base))

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

    def resolve_webui_layer(
        self, lora_name: str, layers: dict[str, tuple[int, ...]]
    ) -> tuple[str | None, str]:
        from .webui import resolve_layer

        return resolve_layer(lora_name, layers)

    # --- the estimate's model (perf/) ------------------------------------------------------------------------------
    def meta_denoiser(self, config: dict[str, Any]) -> torch.nn.Module:
        from .estimate import meta_transformer

        return meta_transformer(config)
