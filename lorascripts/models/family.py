"""Stable Diffusion model families and the names each tool uses for them (LORA_FORMAT.md §7)."""

from __future__ import annotations

from enum import Enum


class ModelFamily(str, Enum):
    """SD1.x, SD2.x or SDXL: decides key prefixes, metadata and default resolution."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"

    @property
    def label(self) -> str:
        return {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}[self.value]

    @property
    def webui_version(self) -> str:
        """The `sd version` value of an AUTOMATIC1111 card sidecar."""
        return {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}[self.value]

    @property
    def v2(self) -> bool:
        return self is ModelFamily.SD2

    def base_model_version(self, v_prediction: bool) -> str:
        """kohya `ss_base_model_version` (A1111 detects SDXL by the `sdxl_` prefix, SD2 by `ss_v2`)."""
        if self is ModelFamily.SDXL:
            return "sdxl_base_v1-0"
        stem = "sd_v1" if self is ModelFamily.SD1 else "sd_v2"
        return f"{stem}_v" if v_prediction else stem

    def modelspec_architecture(self, v_prediction: bool, resolution: int) -> str:
        if self is ModelFamily.SDXL:
            return "stable-diffusion-xl-v1-base/lora"
        if self is ModelFamily.SD1:
            return "stable-diffusion-v1/lora"
        return (
            "stable-diffusion-v2-768-v/lora"
            if v_prediction and resolution >= 768
            else "stable-diffusion-v2-512/lora"
        )

    @property
    def modelspec_implementation(self) -> str:
        if self is ModelFamily.SDXL:
            return "https://github.com/Stability-AI/generative-models"
        return "diffusers"

    @property
    def default_resolution(self) -> int:
        return {"sd1": 512, "sd2": 768, "sdxl": 1024}[self.value]


def family_from_keys(keys: set[str] | list[str]) -> ModelFamily | None:
    """Family of an original-layout (single-file) checkpoint, from its text-encoder key names."""
    keyset = set(keys)
    if any(k.startswith("conditioner.embedders.1.model.") for k in keyset):
        return ModelFamily.SDXL
    if any(k.startswith("cond_stage_model.model.transformer.") for k in keyset):
        return ModelFamily.SD2
    if any(k.startswith("cond_stage_model.transformer.") for k in keyset):
        return ModelFamily.SD1
    return None
