"""Finding tokenizer files offline for checkpoints that do not contain them (every single-file checkpoint).

Each family knows where its tokenizers usually sit; this module searches those places in one order, the same for
every family: folders beside the model, then each *tokenizer root* (the folders where a host keeps the tokenizers
it ships: the config's `tokenizer_roots`, which the ComfyUI node and the WebUI tab fill, then the package folder
of an importable `comfy`), then the Hugging Face cache. `find_tokenizer_folder` is that search; the CLIP-L
tokenizer of the SD families and FLUX.1 is found here too.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError

logger = logging.getLogger(__name__)
HUB_REPOS = ("openai/clip-vit-large-patch14",)
# what CLIPTokenizer reads; the special tokens and the 77-token limit come from the last two
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
# the CLIP-L tokenizer under a tokenizer root: ComfyUI's `comfy/` folder; Forge's `backend/huggingface/`, which
# holds diffusers folders of the models it runs
CLIP_BUNDLED = (
    "sd1_tokenizer",
    "runwayml/stable-diffusion-v1-5/tokenizer",
    "stabilityai/stable-diffusion-xl-base-1.0/tokenizer",
    "black-forest-labs/FLUX.1-dev/tokenizer",
)
# the roots of the model being loaded (a context, not a parameter: the roots are a setting of the search that
# every family's finder reads, and the family protocol's load methods stay as every family implements them)
_ROOTS: ContextVar[tuple[Path, ...]] = ContextVar("tokenizer_roots", default=())


@contextmanager
def using_tokenizer_roots(roots: Sequence[str | Path]) -> Iterator[None]:
    """Within the block, `find_tokenizer_folder` also searches under `roots` (the config's `tokenizer_roots`)."""
    token = _ROOTS.set(tuple(Path(os.path.expanduser(str(root))) for root in roots))
    try:
        yield
    finally:
        _ROOTS.reset(token)


def comfy_package_folder() -> Path | None:
    """The folder of ComfyUI's `comfy` package when it is importable (ComfyUI ships tokenizers in it)."""
    spec = importlib.util.find_spec("comfy")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))  # comfy is a namespace package


def tokenizer_roots() -> list[Path]:
    """The tokenizer roots searched now: the current `using_tokenizer_roots`, then an importable `comfy`."""
    roots = list(_ROOTS.get())
    comfy = comfy_package_folder()
    if comfy is not None and comfy.resolve() not in {root.resolve() for root in roots}:
        roots.append(comfy)
    return roots


@dataclass(frozen=True)
class TokenizerSearch:
    """Where a tokenizer was found (`folder`, None when nowhere) and every place looked, in order."""

    folder: Path | None
    looked: tuple[str, ...]

    def where(self) -> str:
        """The places looked, for an error message."""
        return ", ".join(self.looked)


def find_tokenizer_folder(
    near: Sequence[Path],
    bundled: Sequence[str],
    is_tokenizer: Callable[[Path], bool],
    hub: Sequence[tuple[str, str]] = (),
) -> TokenizerSearch:
    """The first folder `is_tokenizer` accepts among `near` (the family's folders beside the model), then
    `bundled` (the family's known paths relative to a tokenizer root) under each of `tokenizer_roots()`, then
    the Hugging Face cache (`hub`: (repo id, a file of the tokenizer in the repo); the cached file's folder).
    Nothing is downloaded."""
    looked: list[str] = []
    under_roots = [root / relative for root in tokenizer_roots() for relative in bundled]
    for folder in [*near, *under_roots]:
        looked.append(str(folder))
        if is_tokenizer(folder):
            logger.info("tokenizer: %s", folder)
            return TokenizerSearch(folder, tuple(looked))
    from huggingface_hub import try_to_load_from_cache

    for repo, name in hub:
        looked.append(f"the Hugging Face cache of {repo} ({name})")
        # only a real cached copy counts (transformers 5 builds an empty tokenizer when files are missing)
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str) and is_tokenizer(Path(hit).parent):
            logger.info("tokenizer: %s from the Hugging Face cache", repo)
            return TokenizerSearch(Path(hit).parent, tuple(looked))
    return TokenizerSearch(None, tuple(looked))


def is_clip_tokenizer(folder: Path) -> bool:
    return (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()


def _from_folder(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def find_clip_tokenizer(tokenizer_path: str | None, source: Path) -> Any:
    """CLIP-L tokenizer: `tokenizer_path`, a `tokenizer/` folder beside the file, a host's copy under a
    tokenizer root, the HF cache, or (unless HF_HUB_OFFLINE) downloaded from the Hub into its cache."""
    if tokenizer_path:
        if not is_clip_tokenizer(Path(tokenizer_path)):
            raise ModelError(
                f"tokenizer_path {tokenizer_path} has no vocab.json + merges.txt (CLIP tokenizer files)."
            )
        logger.info("tokenizer: %s", tokenizer_path)
        return _from_folder(Path(tokenizer_path))
    near = [source.parent / "tokenizer", source.with_suffix("") / "tokenizer"]
    hub = [(repo, "vocab.json") for repo in HUB_REPOS]
    search = find_tokenizer_folder(near, CLIP_BUNDLED, is_clip_tokenizer, hub)
    if search.folder is not None:
        return _from_folder(search.folder)
    if _offline():
        raise ModelError(
            f"no CLIP tokenizer found for {source.name}: single-file checkpoints do not contain one (looked in "
            f"{search.where()}), and downloading it is off (HF_HUB_OFFLINE). Set `tokenizer_path` to a folder "
            f"with vocab.json and merges.txt (e.g. the `tokenizer` folder of any SD1.5 diffusers model), add the "
            f"folder where your host keeps its tokenizers to `tokenizer_roots`, or run once without "
            f"HF_HUB_OFFLINE to cache {HUB_REPOS[0]} (about 2 MB)."
        )
    return _download(HUB_REPOS[0], source)


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
