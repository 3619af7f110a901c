"""Sample images during training: fixed prompts, fixed seeds, the LoRA applied as it is trained."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

logger = logging.getLogger(__name__)


class _TorchvisionFallbackNote(logging.Filter):
    """Drops transformers' "`XImageProcessor` requires torchvision ...; falling back to `XImageProcessorPil`".

    Importing diffusers' SD pipelines names CLIP's and SigLIP's image processors (for the safety checker and IP
    adapters, which sampling never uses: feature_extractor=None), and transformers 5 prints that note for each
    on every run in an environment without torchvision (a CPU venv; the hosts ship it). Nothing depends on it
    and the user cannot act on it; every other transformers message stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("requires torchvision" in text and "ImageProcessorPil" in text)


def quiet_pipeline_imports() -> None:
    """Install the filter above once, before a family imports its diffusers pipeline classes."""
    import_logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _TorchvisionFallbackNote) for f in import_logger.filters):
        import_logger.addFilter(_TorchvisionFallbackNote())


def build_pipeline(base: object) -> object:
    """A diffusers text-to-image pipeline around the base model's (LoRA-hooked) components."""
    quiet_pipeline_imports()
    return base.family.sampling_pipeline(base)  # type: ignore[attr-defined]


def render(
    pipeline: object,
    prompts: list[str],
    *,
    seed: int,
    width: int,
    height: int,
    steps: int,
    guidance_scale: float,
    clip_skip: int = 1,
    autocast_dtype: torch.dtype | None = None,
) -> list[Image.Image]:
    """One image per prompt; prompt i uses seed + i, so the same prompt always starts from the same noise."""
    images = []
    device = pipeline.device  # type: ignore[attr-defined]
    for i, prompt in enumerate(prompts):
        generator = torch.Generator("cpu").manual_seed(seed + i)
        kwargs = {"clip_skip": clip_skip - 1} if clip_skip > 1 else {}
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
        ):
            result = pipeline(  # type: ignore[operator]
                prompt,
                width=width,
                height=height,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                generator=generator,
                output_type="pil",
                **kwargs,
            )
        images.append(result.images[0])
    return images


def save_samples(images: list[Image.Image], folder: Path, step: int) -> list[Path]:
    """Write samples as `<folder>/step-<N>-<i>.png` and return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"step-{step:08d}-{i:02d}.png"
        tmp = path.with_suffix(".tmp.png")
        image.save(tmp)
        tmp.replace(path)
        paths.append(path)
    return paths
