"""Finding CLIP tokenizer files for checkpoints that do not contain them (every single-file checkpoint)."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import ModelError

logger = logging.getLogger(__name__)
HUB_REPOS = ("openai/clip-vit-large-patch14",)
# what CLIPTokenizer reads; the special tokens and the 77-token limit come from the last two
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


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
    """CLIP-L tokenizer: `tokenizer_path`, a `tokenizer/` folder beside the file, ComfyUI's copy, the HF cache,
    or (unless HF_HUB_OFFLINE) downloaded from the Hub into its cache."""
    for folder in _candidates(tokenizer_path, source):
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            logger.info("tokenizer: %s", folder)
            return _from_folder(folder)
        if tokenizer_path and folder == Path(tokenizer_path):
            raise ModelError(
                f"tokenizer_path {folder} has no vocab.json + merges.txt (CLIP tokenizer files)."
            )
    cached = _from_hub_cache()
    if cached is not None:
        return cached
    if _offline():
        raise ModelError(
            f"no CLIP tokenizer found for {source.name}: single-file checkpoints do not contain one, and "
            f"downloading it is off (HF_HUB_OFFLINE). Set `tokenizer_path` to a folder with vocab.json and "
            f"merges.txt (e.g. the `tokenizer` folder of any SD1.5 diffusers model), or run once without "
            f"HF_HUB_OFFLINE to cache {HUB_REPOS[0]} (about 2 MB)."
        )
    return _download(HUB_REPOS[0], source)


def _from_hub_cache() -> Any:
    from huggingface_hub import try_to_load_from_cache

    for repo in HUB_REPOS:
        # only a real cached copy counts (transformers 5 builds an empty tokenizer when files are missing)
        vocab = try_to_load_from_cache(repo, "vocab.json")
        if isinstance(vocab, str) and (Path(vocab).parent / "merges.txt").is_file():
            logger.info("tokenizer: %s from the Hugging Face cache", repo)
            return _from_folder(Path(vocab).parent)
    return None


def _offline() -> bool:
    from huggingface_hub import constants

    # read at call time too: a host may set HF_HUB_OFFLINE after huggingface_hub was imported
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in (
        "1",
        "ON",
        "YES",
        "TRUE",
    )


def _download(repo: str, source: Path) -> Any:
    """The tokenizer files only (about 2 MB, not the 1.7 GB model), into the Hugging Face cache, as kohya's
    scripts fetch them; later runs find them there offline."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    logger.info("downloading the CLIP tokenizer files of %s (once, into the Hugging Face cache)", repo)
    endpoint = os.environ.get("HF_ENDPOINT") or None  # at call time, like _offline()
    try:
        paths = [hf_hub_download(repo, name, endpoint=endpoint) for name in TOKENIZER_FILES]
    except (OSError, EntryNotFoundError, ValueError) as exc:
        raise ModelError(
            f"no CLIP tokenizer found for {source.name} (single-file checkpoints do not contain one), and "
            f"downloading {repo}'s tokenizer files failed: {type(exc).__name__}: {str(exc)[:300]}. Check the "
            "network (or HF_ENDPOINT), or set `tokenizer_path` to a folder with vocab.json and merges.txt."
        ) from None
    return _from_folder(Path(paths[0]).parent)


def openclip_variant(tokenizer: Any) -> Any:
    """The SD2/SDXL-te2 tokenizer: same vocabulary as CLIP-L, padded with `!` like OpenCLIP."""
    import copy

    clone = copy.deepcopy(tokenizer)
    if "!" in clone.get_vocab():
        clone.pad_token = "!"
    return clone
