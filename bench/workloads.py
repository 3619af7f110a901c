"""What is trained: the workloads (model, resolution, batch, rank, steps) and the image set all contenders share.

Every contender of a workload gets the same base weights, the same 8 procedurally drawn pictures at exactly the
workload's resolution (square, so no bucketing or resizing differs between trainers), one caption for all of
them (ComfyUI's trainer takes a single conditioning), and the same rank, batch, learning rate and step count.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .dit_models import DIT_MODELS, built_model, test_helper

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"
CAPTION = "zkbench, a simple shape on a plain background"
N_IMAGES = 8


@dataclass(frozen=True)
class Workload:
    """One row group of the table: a model at a resolution with a batch size, trained for a number of steps."""

    name: str
    model: str  # "toy", "sd15", "sdxl" or a key of dit_models.DIT_MODELS
    resolution: int
    batch: int
    rank: int = 8
    learning_rate: float = 1e-4
    steps: int = 12  # per run of ours / the reference loop
    comfy_steps: int = 6  # ComfyUI's trainer is slow: fewer steps, same work per step
    warmup: int = 2  # steps dropped before the steady-state rate is taken
    repeats: int = 3
    comfy_repeats: int = 1
    needs_gpu: bool = False
    gradient_checkpointing: bool = False  # ours only: the low-memory preset the VRAM goal is about
    only: tuple[str, ...] = ()  # contenders that run this workload (empty: all)
    text_length: int | None = None  # DiT: tokens of the long text encoder (FLUX: T5), both contenders
    # ours only: config keys of the preset measured (fp8, block swap ...)
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def family(self) -> str:
        if self.model in DIT_MODELS:
            return DIT_MODELS[self.model].family
        return "sdxl" if self.model == "sdxl" else "sd1"


FLUX_PRESETS: dict[str, tuple[tuple[str, Any], ...]] = {
    "bf16": (),
    "fp8": (("fp8_base", True),),
    "fp8-swap16": (("fp8_base", True), ("blocks_to_swap", 16)),
}
# Z-Image's 30 layers, one swap unit each: half of them swapped
ZIMAGE_PRESETS: dict[str, tuple[tuple[str, Any], ...]] = {
    "bf16": (),
    "fp8": (("fp8_base", True),),
    "fp8-swap15": (("fp8_base", True), ("blocks_to_swap", 15)),
}
GPU_OURS: dict[str, Any] = {"needs_gpu": True, "gradient_checkpointing": True, "only": ("ours",)}


def dit_cpu_row(name: str, model: str) -> Workload:
    """A tiny diffusion transformer's CPU row: ours against the plain flow-matching loop at 64 px, batch 2, 128
    caption tokens at most, 30 steps (5 warm-up), 3 runs each."""
    return Workload(
        name, model, 64, batch=2, steps=30, warmup=5, repeats=3, text_length=128, only=("ours", "reference")
    )


def dit_gpu_rows(prefix: str, model: str, presets: dict[str, tuple[tuple[str, Any], ...]]) -> list[Workload]:
    """A diffusion transformer's GPU rows: one per memory preset at 1024 px, batch 1, ours only, gradient
    checkpointing and caches on (the recipe at every memory size), 8 steps."""
    return [
        Workload(
            f"{prefix}-{name}", model, 1024, 1, steps=8, warmup=3, repeats=1, settings=settings, **GPU_OURS
        )
        for name, settings in presets.items()
    ]


# Sized so that the default full run (all CPU workloads, three contenders) stays near 25 minutes on a quiet
# 2-core CPU, from the per-run times in bench/README.md (SD1.5 runs: ours ~1.5-2.5 min, the reference loop
# ~3-5 min, ComfyUI ~4-8 min each). More repeats: --repeats N.
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("tiny-64", "toy", 64, batch=4, steps=24, comfy_steps=8, warmup=4, repeats=3),
        Workload("sd15-256", "sd15", 256, batch=1, steps=6, comfy_steps=3, warmup=1, repeats=1),
        Workload("sd15-512", "sd15", 512, batch=1, steps=5, comfy_steps=3, warmup=1, repeats=1),
        # tiny FLUX.1 (tests/tiny_flux.py): the CPU row of the FLUX goal (ours >= 2x the plain flow-matching loop)
        dit_cpu_row("flux-tiny-64", "flux-tiny"),
        # FLUX.1's architecture at 1024 px with random weights (bench/flux_random.py), GPU only, ours only, caches
        # on and gradient checkpointing (FLUX's recipe at every memory size); the memory presets the VRAM goal is
        # about: bf16 base, fp8 base (the 24 GB setting), fp8 + `blocks_to_swap: 16` (the 12 GB one)
        *dit_gpu_rows("flux-1024", "flux-random", FLUX_PRESETS),
        # tiny Z-Image (tests/tiny_zimage.py at width 384): ours vs the plain flow-matching loop, as flux-tiny-64
        dit_cpu_row("zimage-tiny-64", "zimage-tiny"),
        # Z-Image's architecture at 1024 px with random weights (bench/zimage_random.py), GPU only, ours only,
        # caches and gradient checkpointing on, the same memory presets as FLUX's
        *dit_gpu_rows("zimage-1024", "zimage-random", ZIMAGE_PRESETS),
        Workload("sd15-512-b4", "sd15", 512, batch=4, steps=10, warmup=2, repeats=2, needs_gpu=True),
        # the reference loop is the SD1 script most people start from (one text encoder, no SDXL conditioning)
        Workload(
            "sdxl-1024", "sdxl", 1024, batch=1, steps=12, warmup=3, repeats=2, needs_gpu=True, only=("ours",)
        ),
        Workload(
            "sdxl-1024-ckpt",
            "sdxl",
            1024,
            batch=1,
            steps=8,
            warmup=2,
            repeats=1,
            needs_gpu=True,
            gradient_checkpointing=True,
            only=("ours",),
        ),
    )
}


def comfy_host() -> ModuleType:
    """The test suite's host helper (tests/comfy_host.py: ComfyUI install, SD1.5 random checkpoint)."""
    return test_helper("comfy_host")


def tokenizer_dir() -> Path:
    """CLIP-L tokenizer files for single-file SD checkpoints: the copy ComfyUI ships (nothing downloaded).

    LORA_SCRIPTS_BENCH_TOKENIZER names a copy of that folder instead: a GPU machine with no network cannot
    fetch ComfyUI (bench/device_prepare.sh copies it for the device run).
    """
    override = os.environ.get("LORA_SCRIPTS_BENCH_TOKENIZER")
    if override:
        return Path(override)
    return comfy_host().comfy_root() / "comfy" / "sd1_tokenizer"


def checkpoint_file(model: str) -> Path:
    """The single-file checkpoint of a workload's model (built with random weights when missing)."""
    if model == "toy":
        from lorascripts.toy import TOY_SINGLE_FILE

        return TOY_SINGLE_FILE
    if model == "sd15":
        return comfy_host().sd15_random_checkpoint()
    if model == "sdxl":
        from .sdxl_random import sdxl_random_checkpoint

        return sdxl_random_checkpoint(CACHE / "sdxl-random.safetensors")
    if model in DIT_MODELS:
        return built_model(model, CACHE).base_model
    raise ValueError(f"unknown model {model}")


def model_tokenizer(model: str) -> Path | None:
    """The CLIP tokenizer folder ours is given for the model (None: the toy model finds its own)."""
    if model == "toy":
        return None
    if model in DIT_MODELS:
        return built_model(model, CACHE).tokenizer
    return tokenizer_dir()


def diffusers_folder(model: str) -> Path:
    """A diffusers-format folder of the same weights (what a plain diffusers script loads)."""
    if model == "toy":
        from lorascripts.toy import TOY_MODEL_DIR

        return TOY_MODEL_DIR
    if model in DIT_MODELS:
        folder = built_model(model, CACHE).diffusers_dir
        if folder is None:
            raise ValueError(f"{model} has no diffusers copy: it is measured for ours only")
        return folder
    folder = CACHE / f"{model}-random-diffusers"
    if not (folder / "model_index.json").is_file():
        # in a child process: the whole model in memory would otherwise stay in the bench's own RSS
        script = "import sys; from bench.workloads import write_diffusers_folder as w; w(*sys.argv[1:])"
        args = [sys.executable, "-c", script, str(checkpoint_file(model)), str(folder)]
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        subprocess.run(args, cwd=str(REPO), env={**os.environ, "PYTHONPATH": path}, check=True)
    return folder


def write_diffusers_folder(single_file: str, target: str) -> None:
    """Convert once with our loader, save with diffusers' own pipeline writer (fp16 on disk, like the file)."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from lorascripts.models import load_base_model

    folder = Path(target)
    base = load_base_model(single_file, tokenizer_path=str(tokenizer_dir()))
    parts: dict[str, Any] = {
        "vae": base.vae.to(torch.float16),
        "unet": base.denoiser.to(torch.float16),
        "scheduler": base.noise_scheduler,
    }
    if base.family.name == "sdxl":
        te1, te2 = base.text_encoders
        tok1, tok2 = base.tokenizers
        pipe = StableDiffusionXLPipeline(
            text_encoder=te1.half(), text_encoder_2=te2.half(), tokenizer=tok1, tokenizer_2=tok2, **parts
        )
    else:
        pipe = StableDiffusionPipeline(
            text_encoder=base.text_encoders[0].half(),
            tokenizer=base.tokenizers[0],
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            **parts,
        )
    staging = folder.with_name(folder.name + ".partial")
    pipe.save_pretrained(str(staging))
    staging.replace(folder)


def unet_config(model: str) -> dict[str, Any]:
    """diffusers UNet2DConditionModel config of the model, read without loading weights."""
    from lorascripts.perf.configs import denoiser_config_for

    return denoiser_config_for(str(checkpoint_file(model)))


def image_set(resolution: int) -> Path:
    """8 pictures at resolution x resolution with one shared caption in metadata.csv (written once)."""
    from lorascripts.data.captions import write_metadata
    from lorascripts.toy.scenes import random_scene

    folder = CACHE / f"images-{resolution}"
    if (folder / "metadata.csv").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(resolution)
    rows = {}
    for i in range(N_IMAGES):
        image, _ = random_scene(rng, resolution)
        image.save(folder / f"img_{i:02d}.png")
        rows[f"img_{i:02d}.png"] = CAPTION
    write_metadata(folder / "metadata.csv", rows)
    return folder
