"""The diffusers pipeline that draws preview samples from an SD1/SD2/SDXL model (DDIM on the model's schedule)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .family import StableDiffusionFamily


def build_pipeline(family: StableDiffusionFamily, base: Any) -> Any:
    """StableDiffusionPipeline or StableDiffusionXLPipeline around the base model's (LoRA-hooked) parts."""
    import diffusers

    scheduler = diffusers.DDIMScheduler.from_config(base.noise_scheduler.config)
    pipeline_class = getattr(diffusers, family.pipeline_class)
    parts: dict[str, Any] = {"vae": base.vae, "unet": base.denoiser, "scheduler": scheduler}
    for index, (encoder, tokenizer) in enumerate(zip(base.text_encoders, base.tokenizers)):
        suffix = f"_{index + 1}" if index else ""
        parts[f"text_encoder{suffix}"] = encoder
        parts[f"tokenizer{suffix}"] = tokenizer
    if len(base.text_encoders) == 1:  # SD1/SD2 pipelines take the safety-checker slots
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipeline_class(**parts)
