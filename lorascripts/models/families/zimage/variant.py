"""Z-Image Turbo (step-distilled, 8 steps, no CFG) vs Base (non-distilled): the weights have the same shapes, so
the variant comes from what the file says about itself (its name, as Comfy-Org and Tongyi-MAI publish
`z_image_turbo_bf16.safetensors` / `Z-Image-Turbo`; modelspec metadata) and sets the published defaults.

Published settings: both repos' scheduler_config.json (FlowMatchEulerDiscreteScheduler, shift 3.0, no dynamic
shifting; ComfyUI's `ZImage` model samples with shift 3.0 too); Turbo samples in 8-9 steps with guidance 0,
Base in 28-50 steps with CFG about 4 (the model cards).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}
# training: sigmas shifted as the model's own scheduler shifts them (3.0, both variants; musubi-tuner's example
# uses 2.0 and calls Z-Image's best value unknown, ai-toolkit draws Turbo/Base alike)
TRAINING = {"timestep_sampling": "shift", "discrete_flow_shift": SCHEDULER["shift"]}
# previews: Turbo (and a file we cannot tell) 8 steps without CFG (Turbo's card: 8-9 steps, guidance 0); Base
# with CFG 4 (Base's card: 28-50 steps, guidance 3-5; 28 keeps previews cheap)
SAMPLES = {"base": {"guidance_scale": 4.0, "steps": 28}, "turbo": {"guidance_scale": 0.0, "steps": 8}}


def variant_of(name: str, metadata: dict[str, str]) -> str:
    """turbo, base or unknown, from a file / folder / repo name and the file's metadata (ostris's de-distilled
    `Z-Image-De-Turbo` trains as Base)."""
    said = " ".join([name, metadata.get("modelspec.title", ""), metadata.get("modelspec.architecture", "")])
    said = said.lower().replace("_", "-")
    if "de-turbo" in said or "deturbo" in said or "base" in said:
        return "base"
    return "turbo" if "turbo" in said else "unknown"


def warn_turbo(name: str, base_weights: list[str]) -> None:
    """Training on Turbo: a warning, or with `base_weights` (the de-distillation adapter) an info line."""
    if base_weights:
        logger.info(
            "%s is Z-Image Turbo, trained with base_weights %s merged in (the de-distillation adapter, as "
            "ai-toolkit does): the saved LoRA leaves it out and is meant for plain Turbo at 8 steps without CFG.",
            name,
            ", ".join(Path(f).name for f in base_weights),
        )
        return
    logger.warning(
        "%s is Z-Image Turbo (step-distilled): LoRAs trained on it directly weaken or break the distillation "
        "within a few hundred steps; set base_weights to ostris's zimage_turbo_training_adapter, train on Z-Image "
        "Base, or keep runs short with a low learning rate (README: Z-Image). Set model_variant: base if this "
        "file is not Turbo.",
        name,
    )


def scheduler_config(variant: str) -> dict[str, Any]:
    """The scheduler config a single file implies (the diffusers repos carry their own)."""
    return dict(SCHEDULER)


def config_defaults(variant: str) -> dict[str, Any]:
    """The run settings a Z-Image model trains with when the config leaves them unset (the same for both)."""
    return dict(TRAINING)


def sample_defaults(variant: str) -> dict[str, float]:
    """Preview settings of a Z-Image model of this variant (unknown: Turbo's, the model most people have)."""
    return dict(SAMPLES.get(variant, SAMPLES["turbo"]))
