"""A full-size SDXL-architecture single file with random weights (GPU workload only: ~6.6 GiB, ~15 GB RAM to build).

Built like the test suite's SD1.5 one (tests/comfy_host.py): diffusers / transformers classes with SDXL base's
published configs, written by our own original-layout writer so every loader reads it as SDXL.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
CLIP_L: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "hidden_act": "quick_gelu",
}
CLIP_BIGG: dict[str, Any] = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}


def build_sdxl_random() -> SimpleNamespace:
    """The three parts with random weights (fp16), in the shape `save_single_file` expects."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lorascripts.models.families import get_family

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SDXL_UNET)
    for p in unet.parameters():  # zero-initialised output layers would make every gradient vanish
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.02)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.13025,
    )
    common = {"vocab_size": 49408, "max_position_embeddings": 77}
    te1 = CLIPTextModel(CLIPTextConfig(**common, **CLIP_L))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**common, **CLIP_BIGG))
    return SimpleNamespace(
        family=get_family("sdxl"),
        denoiser=unet.half(),
        vae=vae.half(),
        text_encoders=[te1.half(), te2.half()],
    )


def sdxl_random_checkpoint(path: Path) -> Path:
    """The checkpoint at `path`, built once."""
    if path.is_file():
        return path
    from lorascripts.models.families.sd.ldm_names import save_single_file

    save_single_file(build_sdxl_random(), path)
    return path
