"""Z-Image's architecture with random weights, written as a ZImagePipeline folder (the GPU rows; no download).

The transformer, the Qwen3-4B text encoder and FLUX's VAE are diffusers / transformers classes built from the
published configs (Tongyi-MAI/Z-Image-Turbo's transformer/ and text_encoder/, which Base shares; the sizes
ComfyUI 0.3.75 fixes for Z-Image agree): on a GPU they are created on the meta device and materialised there in
bf16 (flux_random's `materialise`: 6.2 B + 4 B parameters in seconds); `dry` builds the same parts at a tiny
size on the CPU, so the device command can be tested here. The tokenizer is the test suite's small Qwen one:
token ids only index the random embeddings, so its vocabulary does not change a step's work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .flux_random import FULL as FLUX_FULL
from .flux_random import flux_vae, materialise, placement

# Z-Image (6 B, 30 layers, 2 + 2 refiners, dim 3840 in 30 heads of 128) and Qwen3-4B (what is not default)
FULL: dict[str, dict[str, Any]] = {
    "transformer": {
        "dim": 3840, "n_layers": 30, "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "cap_feat_dim": 2560,
        "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
    },
    "vae": FLUX_FULL["vae"],
    "qwen3": {
        "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    },
}  # fmt: skip
# the dry run's stand-in: same classes and code path, sizes the CPU builds in a second
DRY: dict[str, dict[str, Any]] = {
    "transformer": {
        **FULL["transformer"],
        "dim": 64, "n_heads": 2, "n_kv_heads": 2, "n_refiner_layers": 1, "cap_feat_dim": 32,
        "axes_dims": [8, 12, 12],
        "n_layers": 16,  # enough layers for the block-swap preset (15 swapped, 1 left on the device)
    },
    "vae": {**FLUX_FULL["vae"], "block_out_channels": (32, 32, 32, 32), "layers_per_block": 1},
    "qwen3": {
        **FULL["qwen3"],
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 1024,
    },
}  # fmt: skip


def _parts(sizes: dict[str, dict[str, Any]], vocab: int, device: str, dtype: torch.dtype) -> dict:
    from diffusers import ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    # the real vocabulary's embedding rows (151,936 x 2560 in Qwen3-4B) whatever the small tokenizer holds
    config = Qwen3Config(**{**sizes["qwen3"], "vocab_size": max(vocab, sizes["qwen3"]["vocab_size"])})
    with torch.device("meta"):
        modules = {
            "transformer": ZImageTransformer2DModel(**sizes["transformer"]),
            "vae": flux_vae(sizes["vae"]),
            "text_encoder": Qwen3Model(config),
        }  # fmt: skip
    return {name: materialise(m, device, dtype) for name, m in modules.items()}


def build_zimage_random_files(folder: Path, dry: bool = False) -> Path:
    """Write the ZImagePipeline folder `folder/z-image-random` (bf16; fp32 parts on the CPU in dry mode)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline
    from transformers import Qwen2TokenizerFast

    from lorascripts.models.families.zimage.variant import SCHEDULER

    from .dit_models import test_helper

    device, dtype = placement(dry)
    tokenizer = Qwen2TokenizerFast.from_pretrained(
        str(test_helper("tiny_zimage").build_qwen_tokenizer(folder / "qwentok"))
    )
    parts = _parts(DRY if dry else FULL, len(tokenizer), device, dtype)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), tokenizer=tokenizer, **parts
    )
    target = folder / "z-image-random"
    pipe.save_pretrained(str(target), max_shard_size="10GB")
    return target
