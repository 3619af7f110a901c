"""Finding the parts a FLUX transformer file does not hold: the VAE, CLIP-L and T5 files and the T5 tokenizer.

Looked for where ComfyUI users keep them: the file the config names, beside the transformer, or in the ComfyUI
`models/` folder the transformer sits in (`models/unet` or `models/diffusion_models` -> `models/vae`,
`models/clip`, `models/text_encoders`). The T5 tokenizer: beside the transformer, then FLUX's places under the
tokenizer roots (`tokenizers_find`: ComfyUI's `comfy/`, Forge's `backend/huggingface/`), then the Hugging Face
cache. Nothing is downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ....errors import ModelError
from ...tokenizers_find import find_tokenizer_folder
from ..part_files import PartFile, find_part_file

logger = logging.getLogger(__name__)

# file names in the order they are preferred (full precision before fp8)
PART_FILES = {
    "vae": ("ae.safetensors", "flux_vae.safetensors", "flux1_vae.safetensors"),
    "clip_l": ("clip_l.safetensors",),
    "t5": ("t5xxl_fp16.safetensors", "t5xxl.safetensors", "t5xxl_fp8_e4m3fn.safetensors"),
}
COMFY_FOLDERS = {"vae": ("vae",), "clip_l": ("clip", "text_encoders"), "t5": ("text_encoders", "clip")}
PART_LABELS = {
    "vae": "VAE (ae.safetensors)",
    "clip_l": "CLIP-L (clip_l.safetensors)",
    "t5": "T5-XXL (t5xxl_fp16.safetensors)",
}
# the config key (`Family.components`) that names each part's file
CONFIG_KEYS = {"vae": "vae", "clip_l": "text_encoder", "t5": "text_encoder_2"}
T5_TOKENIZER_REPOS = ("google/t5-v1_1-xxl", "black-forest-labs/FLUX.1-dev")
T5_CACHED = tuple(
    (repo, name)
    for repo in T5_TOKENIZER_REPOS
    for name in ("tokenizer.json", "tokenizer_2/tokenizer.json", "spiece.model")
)
# the T5 tokenizer under a tokenizer root (tokenizers_find): ComfyUI's `comfy/`, Forge's `backend/huggingface/`
T5_BUNDLED = ("text_encoders/t5_tokenizer", "black-forest-labs/FLUX.1-dev/tokenizer_2")


PARTS = {
    part: PartFile(CONFIG_KEYS[part], PART_LABELS[part], PART_FILES[part], COMFY_FOLDERS[part])
    for part in PART_FILES
}


def find_part(part: str, given: str | None, transformer: Path) -> Path:
    """The file of one FLUX part: `given` (the config's `vae` / `text_encoder` / `text_encoder_2`) or the first
    one found (part_files.py: beside the transformer, then ComfyUI's folders)."""
    return find_part_file(PARTS[part], given, transformer, "FLUX")


def is_t5_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()


def find_t5_tokenizer(transformer: Path) -> Any:
    """T5TokenizerFast from a folder beside the transformer, a host's copy under a tokenizer root (ComfyUI's,
    Forge's) or the Hugging Face cache."""
    from transformers import T5TokenizerFast

    near = [transformer.parent / "t5_tokenizer", transformer.parent / "tokenizer_2"]
    search = find_tokenizer_folder(near, T5_BUNDLED, is_t5_tokenizer, T5_CACHED)
    if search.folder is not None:
        return T5TokenizerFast.from_pretrained(str(search.folder))
    raise ModelError(
        f"no T5 tokenizer found for {transformer.name} (looked in {search.where()}): put its files "
        "(tokenizer.json or spiece.model) in a `t5_tokenizer` folder beside it, add the folder where your host "
        f"keeps its tokenizers to `tokenizer_roots`, or cache {T5_TOKENIZER_REPOS[0]}'s tokenizer in the Hugging "
        "Face cache."
    )
