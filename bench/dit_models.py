"""The diffusion-transformer models of the benchmark: one entry per model, built locally from configs.

A DiT family adds its benchmark rows with one `DitModel` here (a builder that writes the model in the layout
users have plus a diffusers-pipeline copy for the reference loop) and its workloads in `workloads.py`; the
reference loop's per-family forward pass lives in `reference_dit.py` (`ADAPTERS`).
The tiny builders live in the test suite (`tests/tiny_<family>.py`, the models the tests train) and are loaded
from their files: tests/ is not a package (pytest's rootdir is tests/ on purpose).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BuiltModel:
    """What the contenders read: the file(s) users have, the CLIP tokenizer, a diffusers folder of the same
    weights (None where only ours runs)."""

    base_model: Path
    tokenizer: Path | None
    diffusers_dir: Path | None


@dataclass(frozen=True)
class DitModel:
    """A benchmark model of a DiT family: `build(folder)` writes it once into `folder` (cached by the caller)."""

    family: str  # lorascripts family name (models/families registry)
    build: Callable[[Path], BuiltModel]
    reference: str | None = None  # key of reference_dit.ADAPTERS; None: ours only
    # the stand-in `bench.run --dry` builds instead (tiny, CPU), where this one is large
    dry: str | None = None
    sources: tuple[str, ...] = ()  # files (repository paths) the build depends on: a change rebuilds it


def test_helper(name: str) -> ModuleType:
    """A helper module of the test suite (tests/<name>.py), loaded from its file once per process (registered in
    sys.modules, as dataclasses need)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _toy_clip_tokenizer() -> Path:
    """The toy model's CLIP tokenizer (in the package: no ComfyUI, no download needed)."""
    from lorascripts.toy import TOY_MODEL_DIR

    return TOY_MODEL_DIR / "tokenizer"


def build_flux_tiny(folder: Path) -> BuiltModel:
    """The test suite's tiny FLUX.1-dev (tests/tiny_flux.py: 1 double + 1 single block, 2-level VAE, 2-layer CLIP
    and T5) at width 384 with FLUX.1's head size 128: BFL transformer file + ae/clip_l/t5 in ComfyUI's folders,
    and its FluxPipeline folder.

    Sized like FLUX.1 at 1024 px in proportion: with 64 px pictures (256 image tokens) and 128 T5 tokens the
    attention is ~1/8 of the linear layers' FLOPs as in the real model (token count / 12 x width), and a step
    takes ~0.1-0.2 s on a 2-core CPU. The default width (64) is so small that per-operator overhead, not
    arithmetic, sets the step time there."""
    tiny = test_helper("tiny_flux").build_tiny_flux(folder, _toy_clip_tokenizer(), hidden=384, head_dim=128)
    return BuiltModel(tiny.transformer, tiny.tokenizer_dir, tiny.diffusers_dir)


def build_flux_random(folder: Path, dry: bool = False) -> BuiltModel:
    """FLUX.1-dev's architecture with random weights as a FluxPipeline folder (GPU rows; bench/flux_random.py),
    tokenizers inside; `dry`: the same at a tiny size."""
    from .flux_random import build_flux_random_files

    pipeline = build_flux_random_files(folder, dry)
    return BuiltModel(pipeline, None, None)


def build_zimage_tiny(folder: Path) -> BuiltModel:
    """The test suite's tiny Z-Image (tests/tiny_zimage.py: 2 layers + 1 noise and 1 context refiner, 2-layer
    Qwen3, FLUX's 2-level VAE) at width 384 with Z-Image's head size 128 (3 heads): the transformer in the
    original layout in ComfyUI's folders beside qwen_3_4b / ae, its Qwen tokenizer, and its ZImagePipeline folder.

    Sized like flux-tiny (Z-Image at 1024 px is 4096 image tokens at width 3840, attention ~1/10 of the linear
    FLOPs; here 256 image tokens at width 384 keep that proportion)."""
    test_helper("tiny_flux")  # registered first: tiny_zimage imports its VAE builder by that name
    tiny = test_helper("tiny_zimage").build_tiny_zimage(folder, dim=384, heads=3)
    return BuiltModel(tiny.transformer, tiny.tokenizer_dir, tiny.diffusers_dir)


def build_zimage_random(folder: Path, dry: bool = False) -> BuiltModel:
    """Z-Image's architecture with random weights as a ZImagePipeline folder (GPU rows; bench/zimage_random.py),
    tokenizer inside; `dry`: the same at a tiny size."""
    from .zimage_random import build_zimage_random_files

    test_helper("tiny_flux")  # registered first: tiny_zimage (its Qwen tokenizer) imports it by that name
    return BuiltModel(build_zimage_random_files(folder, dry), None, None)


ZIMAGE_RANDOM_SOURCES = ("bench/zimage_random.py", "bench/flux_random.py", "tests/tiny_zimage.py")
DIT_MODELS: dict[str, DitModel] = {
    "flux-tiny": DitModel("flux1", build_flux_tiny, reference="flux1", sources=("tests/tiny_flux.py",)),
    "flux-random": DitModel(
        "flux1", build_flux_random, dry="flux-random-dry", sources=("bench/flux_random.py",)
    ),
    "flux-random-dry": DitModel(
        "flux1", lambda folder: build_flux_random(folder, dry=True), sources=("bench/flux_random.py",)
    ),
    "zimage-tiny": DitModel(
        "zimage",
        build_zimage_tiny,
        reference="zimage",
        sources=("tests/tiny_zimage.py", "tests/tiny_flux.py"),
    ),
    "zimage-random": DitModel(
        "zimage", build_zimage_random, dry="zimage-random-dry", sources=ZIMAGE_RANDOM_SOURCES
    ),
    "zimage-random-dry": DitModel(
        "zimage", lambda folder: build_zimage_random(folder, dry=True), sources=ZIMAGE_RANDOM_SOURCES
    ),
}


def built_model(name: str, cache: Path) -> BuiltModel:
    """The model `name` under cache/<name>-<hash of its sources>, built once (a `built.json` written last marks
    a complete build)."""
    import hashlib
    import json
    import os
    import shutil

    digest = hashlib.sha256()
    for source in ("bench/dit_models.py", *DIT_MODELS[name].sources):
        digest.update((REPO / source).read_bytes())
    folder = cache / f"{name}-{digest.hexdigest()[:10]}"
    marker = folder / "built.json"
    if marker.is_file():
        data = json.loads(marker.read_text(encoding="utf-8"))
        # paths are kept relative to the folder: a moved or copied cache stays valid
        return BuiltModel(
            *(
                (folder / data[k]).resolve() if data[k] else None
                for k in ("base_model", "tokenizer", "diffusers_dir")
            )
        )
    if folder.exists():  # an interrupted build: start again
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model = DIT_MODELS[name].build(folder)
    data = {k: os.path.relpath(v, folder) if v else None for k, v in model.__dict__.items()}
    marker.write_text(json.dumps(data), encoding="utf-8")
    return model
