"""The built-in toy base models, tiny models pretrained on procedural pictures that load like real checkpoints.

`base_model: toy` in a config resolves to `TOY_MODEL_DIR` (SD1 family, a diffusers folder; `toy-sd1.safetensors`
inside it is the same model as a single-file checkpoint). `TOY_FLUX_FILE` is a FLUX.1-architecture toy in BFL's
single-file layout with its `ae`, `clip_l` and `t5xxl` files beside it (`configs/flux_toy.yaml`). See the
MODEL_CARD.md in each folder for how they were made.
"""

from pathlib import Path

TOY_MODEL_DIR = Path(__file__).resolve().parent / "model"
TOY_SINGLE_FILE = TOY_MODEL_DIR / "toy-sd1.safetensors"
TOY_FLUX_DIR = Path(__file__).resolve().parent / "flux"
TOY_FLUX_FILE = TOY_FLUX_DIR / "flux1-toy.safetensors"

__all__ = ["TOY_FLUX_DIR", "TOY_FLUX_FILE", "TOY_MODEL_DIR", "TOY_SINGLE_FILE"]
