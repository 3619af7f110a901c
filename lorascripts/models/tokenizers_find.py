"""Finding CLIP tokenizer files for checkpoints that do not contain them (every single-file checkpoint)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from ..errors import ModelError

logger = logging.getLogger(__name__)
HUB_REPOS = ("openai/clip-vit-large-patch14",)


def _from_folder(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def comfy_tokenizer_folder() -> Path | None:
    """The CLIP-L tokenizer ComfyUI ships with its code (`comfy/sd1_tokenizer`), when ComfyUI is importable."""
    spec = importlib.util.find_spec("comfy")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = (
        Path(next(iter(spec.submodule_search_locations))) / "sd1_tokenizer"
    )  # comfy is a namespace package
    return folder if (folder / "vocab.json").is_file() else None


def _candidates(tokenizer_path: str | None, source: Path) -> list[Path]:
    found = []
    if tokenizer_path:
        found.append(Path(tokenizer_path))
    for near in (source.parent / "tokenizer", source.with_suffix("") / "tokenizer"):
        found.append(near)
    comfy = comfy_tokenizer_folder()
    if comfy is not None:
        found.append(comfy)
    return found


def find_clip_tokenizer(tokenizer_path: str | None, source: Path) -> Any:
    """CLIP-L tokenizer: `tokenizer_path`, a `tokenizer/` folder beside the file, ComfyUI's copy, or the HF cache."""
    for folder in _candidates(tokenizer_path, source):
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            logger.info("tokenizer: %s", folder)
            return _from_folder(folder)
        if tokenizer_path and folder == Path(tokenizer_path):
            raise ModelError(
                f"tokenizer_path {folder} has no vocab.json + merges.txt (CLIP tokenizer files)."
            )
    from huggingface_hub import try_to_load_from_cache

    for repo in HUB_REPOS:
        # only a real cached copy counts (transformers 5 builds an empty tokenizer when files are missing)
        vocab = try_to_load_from_cache(repo, "vocab.json")
        if isinstance(vocab, str) and (Path(vocab).parent / "merges.txt").is_file():
            logger.info("tokenizer: %s from the Hugging Face cache", repo)
            return _from_folder(Path(vocab).parent)
    raise ModelError(
        f"no CLIP tokenizer found for {source.name}: single-file checkpoints do not contain one. Set "
        "`tokenizer_path` to a folder with vocab.json and merges.txt (e.g. the `tokenizer` folder of any SD1.5 "
        "diffusers model), or run once with internet access to cache openai/clip-vit-large-patch14."
    )


def openclip_variant(tokenizer: Any) -> Any:
    """The SD2/SDXL-te2 tokenizer: same vocabulary as CLIP-L, padded with `!` like OpenCLIP."""
    import copy

    clone = copy.deepcopy(tokenizer)
    if "!" in clone.get_vocab():
        clone.pad_token = "!"
    return clone
