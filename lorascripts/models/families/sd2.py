"""SD2.x: one OpenCLIP-H text encoder (penultimate layer), 64 channels a head; 768-v models predict v."""

from __future__ import annotations

from typing import Any

from .sd.family import StableDiffusionFamily
from .sd1 import _clip_act


class SD2(StableDiffusionFamily):
    name = "sd2"
    label = "SD2.x"
    webui_version = "SD2"
    default_resolution = 768
    text_components = ("te",)
    text_layouts = (("cond_stage_model.model.", "openclip"),)
    version_prefix = "sd_v2"
    webui_sd2_names = True
    reference_unet = {  # SD2.1
        "sample_size": 64,
        "cross_attention_dim": 1024,
        "attention_head_dim": [5, 10, 20, 20],
        "use_linear_projection": True,
    }
    reference_texts = ({"hidden": 1024, "layers": 23, "heads": 16, "inter": 4096, "act": "gelu"},)

    def claims_diffusers(self, source: str, index: dict, local_only: bool) -> bool:
        return _clip_act(source, index, local_only) == "gelu"

    def default_prediction_type(self, unet_config: Any) -> str:
        # single-file SD2: 768-v models (96x96 latents) are v-prediction, 512 base models epsilon
        return "v_prediction" if unet_config.sample_size >= 96 else "epsilon"

    def lora_metadata(self, *, v_prediction: bool, resolution: int) -> dict[str, str]:
        return {
            "ss_v2": "True",
            "ss_base_model_version": "sd_v2_v" if v_prediction else "sd_v2",
            "modelspec.architecture": "stable-diffusion-v2-768-v/lora"
            if v_prediction and resolution >= 768
            else "stable-diffusion-v2-512/lora",
            "modelspec.implementation": "diffusers",
        }
