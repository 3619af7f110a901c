"""SD1.x: one CLIP-L text encoder, 8 attention heads, 512 px."""

from __future__ import annotations

from .sd.family import StableDiffusionFamily


class SD1(StableDiffusionFamily):
    name = "sd1"
    label = "SD1.x"
    webui_version = "SD1"
    default_resolution = 512
    text_components = ("te",)
    text_layouts = (("cond_stage_model.transformer.", "clip_l"),)
    fixed_unet_heads = 8
    version_prefix = "sd_v1"
    reference_unet = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8}  # SD1.5
    reference_texts = ({"hidden": 768, "layers": 12, "heads": 12, "inter": 3072, "act": "quick_gelu"},)

    def claims_diffusers(self, source: str, index: dict, local_only: bool) -> bool:
        return _clip_act(source, index, local_only) == "quick_gelu"

    def lora_metadata(self, *, v_prediction: bool, resolution: int) -> dict[str, str]:
        return {
            "ss_v2": "False",
            "ss_base_model_version": "sd_v1_v" if v_prediction else "sd_v1",
            "modelspec.architecture": "stable-diffusion-v1/lora",
            "modelspec.implementation": "diffusers",
        }


def _clip_act(source: str, index: dict, local_only: bool) -> str | None:
    """The activation of a StableDiffusionPipeline's text encoder: CLIP-L (SD1) quick_gelu, OpenCLIP (SD2) gelu."""
    if index.get("_class_name") != "StableDiffusionPipeline":
        return None
    from transformers import CLIPTextConfig

    try:
        config = CLIPTextConfig.from_pretrained(source, subfolder="text_encoder", local_files_only=local_only)
    except (OSError, ValueError):
        return None
    return config.hidden_act
