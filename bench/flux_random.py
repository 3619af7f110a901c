"""FLUX.1-dev's architecture with random weights, written as a FluxPipeline folder (the GPU rows; no download).

Every part is a diffusers / transformers class built from FLUX.1-dev's published configs: on a GPU the modules
are created on the meta device and materialised there in bf16 (12B + 4.7B parameters in seconds, never in host
memory twice); `dry` builds the same parts at a tiny size on the CPU, so the device command can be tested here.
The tokenizers are small locally trained ones (the toy model's CLIP tokenizer, the test suite's T5 one): token
ids only index the random embeddings, so their vocabulary does not change a step's work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# black-forest-labs/FLUX.1-dev's transformer/, vae/, text_encoder/ and text_encoder_2/ configs (what is not default)
FULL: dict[str, dict[str, Any]] = {
    "transformer": {"num_layers": 19, "num_single_layers": 38, "guidance_embeds": True},
    "vae": {
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "latent_channels": 16,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
    },
    "clip": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
    },
    "t5": {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64},
}
# the dry run's stand-in: same classes and code path, sizes the CPU builds in a second
DRY: dict[str, dict[str, Any]] = {
    "transformer": {
        "num_layers": 8,  # enough blocks for the block-swap preset (16 units = 8 double + 16 single)
        "num_single_layers": 16,
        "attention_head_dim": 32,
        "num_attention_heads": 2,
        "joint_attention_dim": 32,
        "pooled_projection_dim": 32,
        "axes_dims_rope": (4, 14, 14),
        "guidance_embeds": True,
    },
    "vae": {**FULL["vae"], "block_out_channels": (32, 32, 32, 32), "layers_per_block": 1},
    "clip": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1},
    "t5": {"d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_heads": 2},
}


def materialise(module: torch.nn.Module, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Meta-device module -> random weights of `dtype` on `device`, allocated once: matrices N(0, 1/fan_in)
    (no layer left at zero: a zero output projection would make every LoRA gradient vanish), norm scales 1,
    biases 0; transformers' tied embeddings tied again."""
    module = module.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen, device=device, dtype=dtype) * p.shape[1] ** -0.5)
            else:
                p.fill_(1.0 if "norm" in name or name.endswith("scale") else 0.0)
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    return module.eval()


def placement(dry: bool) -> tuple[str, torch.dtype]:
    """Where the random parts are made and in which dtype: bf16 on the GPU; fp32 on the CPU (dry mode, no GPU)."""
    device = "cpu" if dry or not torch.cuda.is_available() else "cuda"
    return device, torch.float32 if device == "cpu" else torch.bfloat16


def flux_vae(sizes: dict[str, Any]) -> torch.nn.Module:
    """FLUX.1's VAE (16 channels, its shift and scale, no quant convs) with `sizes`; built where the caller is
    (the meta device here)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        **sizes, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False
    )


def _parts(sizes: dict[str, dict[str, Any]], vocab: tuple[int, int], device: str, dtype: torch.dtype) -> dict:
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_config = CLIPTextConfig(
        vocab_size=vocab[0], max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=vocab[0] - 2,
        eos_token_id=vocab[0] - 1, pad_token_id=vocab[0] - 1, **sizes["clip"],
    )  # fmt: skip
    t5_config = T5Config(
        vocab_size=vocab[1],
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        **sizes["t5"],
    )
    with torch.device("meta"):
        modules = {
            "transformer": FluxTransformer2DModel(**sizes["transformer"]),
            "vae": flux_vae(sizes["vae"]),
            "text_encoder": CLIPTextModel(clip_config),
            "text_encoder_2": T5EncoderModel(t5_config),
        }  # fmt: skip
    return {name: materialise(m, device, dtype) for name, m in modules.items()}


def build_flux_random_files(folder: Path, dry: bool = False) -> Path:
    """Write the FluxPipeline folder `folder/flux1-dev-random` (bf16; fp32 parts on the CPU in dry mode)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTokenizer, T5TokenizerFast

    from lorascripts.models.families.flux1.load import DEV_SCHEDULER
    from lorascripts.toy import TOY_MODEL_DIR

    from .dit_models import test_helper

    device, dtype = placement(dry)
    clip_tok = CLIPTokenizer.from_pretrained(str(TOY_MODEL_DIR / "tokenizer"))
    t5_tok = T5TokenizerFast.from_pretrained(
        str(test_helper("tiny_flux").build_t5_tokenizer(folder / "t5tok"))
    )
    parts = _parts(DRY if dry else FULL, (len(clip_tok), len(t5_tok)), device, dtype)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**DEV_SCHEDULER),
        tokenizer=clip_tok,
        tokenizer_2=t5_tok,
        **parts,
    )
    target = folder / "flux1-dev-random"
    pipe.save_pretrained(str(target), max_shard_size="10GB")
    return target
