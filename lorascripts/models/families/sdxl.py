"""SDXL: CLIP-L + OpenCLIP-bigG (pooled), size conditioning, 1024 px, original (SGM) U-Net names in LoRA files."""

from __future__ import annotations

from typing import Any

import torch

from .sd.family import StableDiffusionFamily


class SDXL(StableDiffusionFamily):
    name = "sdxl"
    label = "SDXL"
    webui_version = "SDXL"
    default_resolution = 1024
    text_components = ("te1", "te2")
    text_layouts = (
        ("conditioner.embedders.0.transformer.", "clip_l"),
        ("conditioner.embedders.1.model.", "openclip"),
    )
    per_block_transformer_depth = True
    webui_needs_version = True
    projected_second_encoder = True
    vae_scaling_factor = 0.13025
    version_prefix = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"
    reference_unet = {  # SDXL 1.0 base
        "sample_size": 128,
        "block_out_channels": [320, 640, 1280],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2, 10],
        "attention_head_dim": [5, 10, 20],
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
    }
    reference_texts = (
        {"hidden": 768, "layers": 12, "heads": 12, "inter": 3072, "act": "quick_gelu"},
        {"hidden": 1280, "layers": 32, "heads": 20, "inter": 5120, "act": "gelu", "projection": 1280},
    )

    def claims_diffusers(self, source: str, index: dict, local_only: bool) -> bool:
        return index.get("_class_name") == "StableDiffusionXLPipeline"

    def complete_arch(self, arch: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
        arch.setdefault("pooled_dim", shapes["conditioner.embedders.1.model.text_projection"][1])

    def image_conditioning(
        self, base: Any, prepared: list[Any], latent_shape: tuple[int, ...]
    ) -> dict[str, torch.Tensor]:
        """SDXL's micro-conditioning: original size, crop top-left and target size of each image."""
        scale = 2 ** (len(base.vae.config.block_out_channels) - 1)
        h, w = latent_shape[-2] * scale, latent_shape[-1] * scale
        ids = [[*x.original_size, *x.crop_top_left, h, w] for x in prepared]
        return {"time_ids": torch.tensor(ids, dtype=torch.float32)}

    def added_conditions(self, conditioning: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, Any]:
        return {
            "added_cond_kwargs": {
                "text_embeds": conditioning["pooled"].to(dtype),
                "time_ids": conditioning["time_ids"].to(dtype),
            }
        }

    def lora_metadata(self, *, v_prediction: bool, resolution: int) -> dict[str, str]:
        # A1111 detects SDXL LoRAs by the `sdxl_` prefix
        return {
            "ss_v2": "False",
            "ss_base_model_version": "sdxl_base_v1-0",
            "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
            "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        }
