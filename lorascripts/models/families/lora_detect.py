"""Which model family a LoRA file is for, from its metadata and key grammar: ours (SD1/SD2/SDXL) by name, and
the families other trainers write (FLUX.1, SD3, kohya's chroma/lumina/...) by the name they use, so that tools
can refuse them by name instead of guessing. Detection only: what a family does with a file is in its module.
"""

from __future__ import annotations

import re

import torch

SD_FAMILIES = ("sd1", "sd2", "sdxl")
# kohya's FLUX.1 names (networks/lora_flux.py): 19 double- and 38 single-stream blocks; HunyuanImage 2.1 uses the
# same block names with 20 and 40, so higher indices prove only "a double/single-stream transformer"
_FLUX_DOUBLE, _FLUX_SINGLE = (
    re.compile(r"lora_unet_double_blocks_(\d+)_"),
    re.compile(r"lora_unet_single_blocks_(\d+)_"),
)
# Z-Image: its block lists in kohya names, ComfyUI's (`attention_qkv`, `attention_out`) and musubi-tuner's
# (`attention_to_q`); Lumina 2 has the same block names, so kohya's `lumina2` metadata wins over these keys
_ZIMAGE = re.compile(r"lora_unet_(layers|noise_refiner|context_refiner)_\d+_(attention|feed_forward|adaLN)")
_SDXL_UNET = ("lora_unet_input_blocks_", "lora_unet_output_blocks_", "lora_unet_middle_block_")
_SD_UNET = ("lora_unet_down_blocks_", "lora_unet_up_blocks_", "lora_unet_mid_block_")


def _family_from_metadata(metadata: dict[str, str]) -> str | None:
    """The family the file's own metadata names: kohya's ss_base_model_version, else modelspec.architecture."""
    version = metadata.get("ss_base_model_version", "").strip()
    arch = metadata.get("modelspec.architecture", "").split("/")[0].strip()
    if version.startswith("sdxl") or arch.startswith("stable-diffusion-xl"):
        return "sdxl"
    if (
        version.startswith("sd_v2")
        or metadata.get("ss_v2") == "True"
        or arch.startswith("stable-diffusion-v2")
    ):
        return "sd2"
    if version.startswith("sd_v1") or arch.startswith("stable-diffusion-v1"):
        return "sd1"
    if version.replace("_", "").replace("-", "").lower().startswith("zimage") or arch.lower().startswith(
        "z-image"
    ):
        return "zimage"
    if version:  # kohya's other trainers write flux1, chroma, lumina2, hunyuan-image-2.1, ...
        return version
    if arch.startswith("flux-1"):
        return "flux1"
    if arch.startswith("stable-diffusion-3"):
        return "sd3"
    return arch or None


def _family_from_keys(keys: list[str]) -> str | None:
    """What the key grammar proves: flux1, sd3, zimage, sdxl (U-Net names), "te12" (only SDXL/SD3/FLUX text-encoder
    names), "sd" (SD1/SD2 names), "dit" (double/single blocks beyond FLUX.1's) or None."""
    doubles = [int(m[1]) for k in keys if (m := _FLUX_DOUBLE.match(k))]
    singles = [int(m[1]) for k in keys if (m := _FLUX_SINGLE.match(k))]
    if doubles or singles:
        return "flux1" if max(doubles, default=0) < 19 and max(singles, default=0) < 38 else "dit"
    if any(k.startswith("lora_unet_joint_blocks_") for k in keys):
        return "sd3"
    if any(_ZIMAGE.match(k) for k in keys):
        return "zimage"
    if any(k.startswith(_SDXL_UNET) for k in keys):
        return "sdxl"
    two_encoders = any(k.startswith(("lora_te1_", "lora_te2_")) for k in keys)
    if any(k.startswith(_SD_UNET + ("lora_te_",)) for k in keys):
        return "sdxl" if two_encoders else "sd"  # SDXL with diffusers U-Net names (some trainers write them)
    return "te12" if two_encoders else None


def detect_family(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sd1, sd2 or sdxl; another family by name (flux1, sd3, or what the metadata calls it); or "unknown".

    The key grammar decides what kind of model the file patches; the metadata and the cross-attention width
    then tell SD1 from SD2. A file whose keys and metadata prove nothing is "unknown", never guessed as SD1.
    """
    keyed, named = _family_from_keys(list(tensors)), _family_from_metadata(metadata)
    other = named if named and named not in SD_FAMILIES else None  # a non-SD family the file names
    if keyed == "sd":
        if named in SD_FAMILIES:
            return named
        for key, tensor in tensors.items():
            if "attn2_to_k.lora_down" in key:
                return {1024: "sd2", 2048: "sdxl"}.get(int(tensor.shape[1]), "sd1")
        return "sd1"  # SD1 key grammar (SD2 files carry ss_v2 or a 1024-wide cross-attention)
    if keyed == "te12":
        return other or "sdxl"
    if keyed in (None, "dit"):
        return named or "unknown"
    return other if other and keyed != "sdxl" else keyed  # e.g. kohya's "chroma" on FLUX.1 block names


def family_label(family: str) -> str:
    """How a family is written in messages: SD1, SDXL, FLUX.1, ..."""
    return {"flux1": "FLUX.1", "sd3": "SD3", "zimage": "Z-Image"}.get(
        family, family.upper() if family in SD_FAMILIES else family
    )


def peft_family(downs: dict[str, torch.Tensor]) -> str:
    """sd1, sd2 or sdxl of a diffusers/PEFT SD LoRA (`lora_A` tensors by module key), flux1 for diffusers' FLUX
    transformer names, zimage for ai-toolkit's Z-Image ones: a second text encoder means SDXL, else the cross-attention width tells SD1 (768) from SD2 (1024) and SDXL (2048)."""
    components = {k.split(".", 1)[0] for k in downs}
    if any(
        k.startswith(("transformer.transformer_blocks.", "transformer.single_transformer_blocks."))
        for k in downs
    ):
        return "flux1"  # diffusers' / ai-toolkit's FLUX.1 names
    if any(
        k.split(".", 1)[-1].startswith(("layers.", "noise_refiner."))
        and k.startswith(("diffusion_model.", "transformer."))
        for k in downs
    ):
        return "zimage"  # ai-toolkit's Z-Image names (diffusers' modules under `diffusion_model.`)
    family = "sdxl" if "text_encoder_2" in components else "sd1"
    for key, down in downs.items():
        if key.endswith("attn2.to_k") and key.startswith("unet."):
            return {1024: "sd2", 2048: "sdxl"}.get(int(down.shape[1]), family)
    return family
