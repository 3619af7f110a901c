"""The built-in toy base model: a tiny SD1-family latent diffusion model pretrained on procedural pictures.

`base_model: toy` in a config resolves to `TOY_MODEL_DIR` (a diffusers folder; `toy-sd1.safetensors` inside it
is the same model as a single-file checkpoint). See MODEL_CARD.md there for how it was made.
"""

from pathlib import Path

TOY_MODEL_DIR = Path(__file__).resolve().parent / "model"
TOY_SINGLE_FILE = TOY_MODEL_DIR / "toy-sd1.safetensors"

__all__ = ["TOY_MODEL_DIR", "TOY_SINGLE_FILE"]
