"""Tiny but architecturally real SD1 / SD2 / SDXL models, built from configs and saved the way users have them.

Each model has the real block structure (block types, layers_per_block=2, cross-attention, SDXL's text_time
embedding and two text encoders) at small widths, and is written both as a single-file original-layout
checkpoint and as a diffusers folder, so tests go through the same loading code users hit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lorascripts.models.families import BaseModel, get_family
from lorascripts.models.families.sd.ldm_names import save_single_file
from lorascripts.models.families.sd.objective import sd_noise_scheduler
from lorascripts.models.families.sd.single_file import ARCH_KEY
from lorascripts.models.tokenizer_build import train_clip_tokenizer

WORDS = (
    "a an the red green blue yellow white black circle square triangle shape small large big on in of with "
    "background picture photo drawing style zkstyle painting of and"
).split()


@dataclass(frozen=True)
class TinyModel:
    family: str
    single_file: Path
    diffusers_dir: Path
    tokenizer_dir: Path


def build_tokenizer(folder: Path) -> Path:
    sentences = [
        f"a {c} {s} on a {b} background" for c in WORDS[3:10] for s in WORDS[10:13] for b in WORDS[7:10]
    ]
    return train_clip_tokenizer(sentences + [" ".join(WORDS)] * 3, folder, vocab_size=300)


def _text_encoder(
    vocab: int, act: str, projection: int | None, seed: int, standard: bool = False
) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    width = 64 if standard else 32  # standard: 64 channels a head, like every real CLIP text encoder
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=3,
        num_attention_heads=1 if standard else 2,
        max_position_embeddings=77,
        hidden_act=act,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
        **({"projection_dim": projection} if projection else {}),
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _unet(family: str, seed: int, standard: bool = False) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    common = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=8)
    if (
        standard
    ):  # widths that follow the real-checkpoint rules (32 groups, SD1: 8 heads): no arch metadata needed
        return UNet2DConditionModel(
            **{**common, "norm_num_groups": 32},
            block_out_channels=(32, 32, 64, 64),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=64,
            attention_head_dim=8,
        ).eval()
    if family == "sdxl":
        unet = UNet2DConditionModel(
            **common,
            block_out_channels=(16, 32, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=64,
            attention_head_dim=(1, 2, 2),
            transformer_layers_per_block=(1, 1, 2),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=16 + 6 * 8,
        )
    else:
        unet = UNet2DConditionModel(
            **common,
            block_out_channels=(16, 16, 32, 32),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=32,
            attention_head_dim=(2, 2, 4, 4) if family == "sd2" else 2,
            use_linear_projection=family == "sd2",
        )
    for p in unet.parameters():  # diffusers zero-inits conv_out; give it weights so every layer matters
        if p.abs().sum() == 0 and p.dim() > 1:
            torch.nn.init.normal_(p, std=0.02)
    return unet.eval()


def _vae(seed: int, scaling: float, standard: bool = False) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 64) if standard else (16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=32 if standard else 8,
        layers_per_block=1,
        sample_size=32,
        scaling_factor=scaling,
    ).eval()


def build_tiny(
    family: str, root: Path, tokenizer_dir: Path, seed: int = 0, *, standard: bool = False
) -> TinyModel:
    """Build, save (single file + diffusers folder) and describe one tiny model.

    `standard`: SD1 only; sizes follow the rules real checkpoints follow, and the single file carries no
    architecture metadata (the path every downloaded checkpoint takes).
    """
    from transformers import CLIPTokenizer

    fam = get_family(family)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    vocab = len(tokenizer)
    act = "quick_gelu" if family == "sd1" else "gelu"
    encoders = [_text_encoder(vocab, "quick_gelu" if family == "sdxl" else act, None, seed + 1, standard)]
    tokenizers = [tokenizer]
    if family == "sdxl":
        encoders.append(_text_encoder(vocab, "gelu", 16, seed + 2))
        tok2 = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
        tok2.pad_token = "!"
        tokenizers.append(tok2)
    elif family == "sd2":
        tokenizers[0].pad_token = "!"
    scheduler = sd_noise_scheduler()
    base = BaseModel(
        family=fam,
        denoiser=_unet(family, seed + 3, standard),
        vae=_vae(seed + 4, 0.13025 if family == "sdxl" else 0.18215, standard),
        text_encoders=encoders,
        tokenizers=tokenizers,
        noise_scheduler=scheduler,
        prediction_type="epsilon",
        source="",
        name=f"tiny-{family}",
        resolution=32,
    )
    root.mkdir(parents=True, exist_ok=True)
    single = root / f"tiny-{family}.safetensors"
    arch = {
        "unet_heads": base.denoiser.config.attention_head_dim,
        "unet_groups": 8,
        "vae_groups": 8,
        "text_heads": [2, 2],
        "sample_size": 16,
        "scaling_factor": base.vae.config.scaling_factor,
    }
    save_single_file(base, single, metadata=None if standard else {ARCH_KEY: json.dumps(arch)})
    folder = root / f"tiny-{family}-diffusers"
    _save_diffusers(base, scheduler, folder)
    return TinyModel(family, single, folder, tokenizer_dir)


def _save_diffusers(base: BaseModel, scheduler: object, folder: Path) -> None:
    """The same model as a diffusers folder (what `from_pretrained` users have)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    encoders, tokenizers = base.text_encoders, base.tokenizers
    if len(encoders) == 2:
        pipe = StableDiffusionXLPipeline(
            vae=base.vae,
            text_encoder=encoders[0],
            text_encoder_2=encoders[1],
            tokenizer=tokenizers[0],
            tokenizer_2=tokenizers[1],
            unet=base.denoiser,
            scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=base.vae,
            text_encoder=encoders[0],
            tokenizer=tokenizers[0],
            unet=base.denoiser,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(str(folder))
