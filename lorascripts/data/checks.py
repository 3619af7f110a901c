"""Dataset checks before training (and `tools/check_dataset.py`): what would make a LoRA worse, per image.

Errors (training refuses them): unreadable files, images without a caption. Warnings: images smaller than the
training resolution, blurry images (variance of the Laplacian), near-duplicates (perceptual hash), extreme
aspect ratios, empty captions or captions longer than the family's text-encoder window, generic words, a
missing or misspelled trigger word, and what vision-language captioners write: hedging openers ("The image
shows") and repeated sentences.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..caption.postprocess import GENERIC_WORDS, hedging_opener, repeated_sentences
from ..errors import DatasetError
from .captions import normalise_name, read_caption_file, read_metadata
from .findings import DatasetReport, Flag, ImageInfo
from .images import IMAGE_EXTENSIONS, has_image_suffix, is_animated, load_image
from .report import write_html_report

logger = logging.getLogger(__name__)
BLUR_THRESHOLD = 0.02  # sharpness = var(Laplacian) / var(image); sharp pictures score well above this
DUPLICATE_DISTANCE = 4  # of 64 pHash bits
MAX_ASPECT = 3.0
TOKEN_WINDOW = 75  # CLIP: 77 tokens minus start/end; the window when the family is not known (`auto`)


def token_window(family: str | None) -> int:
    """The caption window of a family's text encoder (`Family.caption_token_window`); CLIP's 75 when the family
    is unknown or `auto`."""
    from ..models.families import family_names, get_family

    return get_family(family).caption_token_window if family in family_names() else TOKEN_WINDOW


def sharpness(image: Image.Image) -> float:
    """var(Laplacian) / var(grey): scale-free, so flat graphics with crisp edges pass and blurred copies fail."""
    from scipy.ndimage import laplace

    grey = np.asarray(image.convert("L"), dtype=np.float32)
    spread = grey.var()
    return float(laplace(grey).var() / spread) if spread > 1e-6 else 0.0


def _vlm_flags(file: str, caption: str) -> list[Flag]:
    """What vision-language captioners get wrong: an opener that says nothing, a sentence said twice."""
    flags = []
    opener = hedging_opener(caption)
    if opener:
        flags.append(Flag(file, "hedging", "warning", f"starts with {opener!r}: say what is visible"))
    repeated = repeated_sentences(caption)
    if repeated:
        flags.append(Flag(file, "repeated_sentence", "warning", f"repeats {repeated[0][:60]!r}"))
    return flags


def _caption_flags(
    file: str, caption: str | None, trigger: str, token_count: Any, window: int = TOKEN_WINDOW
) -> list[Flag]:
    if caption is None:
        return [Flag(file, "no_caption", "error", "no caption (metadata.csv row or .txt file)")]
    flags = []
    if not caption.strip():
        flags.append(Flag(file, "empty_caption", "warning", "empty caption"))
        return flags
    words = set(re.findall(r"[a-z]+", caption.lower()))
    generic = sorted(words & set(GENERIC_WORDS))
    if generic:
        flags.append(
            Flag(file, "generic_words", "warning", f"generic words {generic}: describe what is visible")
        )
    flags += _vlm_flags(file, caption)
    tokens = token_count(caption)
    if tokens > window:
        flags.append(
            Flag(file, "long_caption", "warning", f"{tokens} tokens; the text encoder sees {window}")
        )
    if trigger and trigger.lower() not in caption.lower():
        squashed = re.sub(r"[\s_-]", "", trigger.lower())
        if squashed and squashed in re.sub(r"[\s_-]", "", caption.lower()):
            flags.append(
                Flag(
                    file, "trigger_spelling", "warning", f"trigger word spelled differently than {trigger!r}"
                )
            )
        else:
            flags.append(Flag(file, "no_trigger", "warning", f"caption lacks the trigger word {trigger!r}"))
    return flags


def _image_flags(info: ImageInfo, image: Image.Image, resolution: int) -> list[Flag]:
    flags = []
    w, h = image.size
    if min(w, h) < resolution:
        flags.append(
            Flag(
                info.file,
                "too_small",
                "warning",
                f"{w}x{h} is smaller than the training resolution {resolution}",
            )
        )
    if max(w, h) / max(1, min(w, h)) > MAX_ASPECT:
        flags.append(Flag(info.file, "aspect_ratio", "warning", f"extreme aspect ratio {w}x{h}"))
    if np.asarray(image.convert("L"), dtype=np.float32).var() < 1.0:
        flags.append(Flag(info.file, "blank", "warning", "almost a single colour: nothing to learn from"))
        return flags
    score = sharpness(image)
    if score < BLUR_THRESHOLD:
        flags.append(Flag(info.file, "blurry", "warning", f"looks blurry (sharpness {score:.3f})"))
    return flags


def check_images(
    images: list[ImageInfo],
    *,
    resolution: int = 512,
    trigger_word: str = "",
    tokenizer: Any = None,
    family: str | None = None,
) -> list[Flag]:
    """All flags for a list of images with their captions (`family`: whose text-encoder window applies)."""
    import imagehash

    def token_count(text: str) -> int:
        if tokenizer is not None:
            return len(tokenizer(text, add_special_tokens=False).input_ids)
        return int(len(re.findall(r"\w+|[^\w\s]", text)) * 1.3)

    flags: list[Flag] = []
    hashes: list[tuple[str, Any]] = []
    for info in images:
        try:
            image = load_image(info.path)
        except DatasetError as exc:
            flags.append(Flag(info.file, "unreadable", "error", str(exc).split(". ")[0]))
            continue
        info.size = image.size
        flags += _image_flags(info, image, resolution)
        if is_animated(info.path):
            flags.append(Flag(info.file, "animated", "warning", "animated: only the first frame is trained"))
        digest = imagehash.phash(image)
        twin = next((name for name, other in hashes if digest - other <= DUPLICATE_DISTANCE), None)
        if twin:
            flags.append(Flag(info.file, "duplicate", "warning", f"near-duplicate of {twin}"))
        hashes.append((info.file, digest))
        flags += _caption_flags(info.file, info.caption, trigger_word, token_count, token_window(family))
    return flags


def _image_files(root: Path) -> list[Path]:
    """Image-named files under `root`, following symlinked folders as training does (data/sources.py), each real
    folder once (a link back into the dataset is not walked again)."""
    seen: set[str] = set()
    ancestors = {str(p) for p in root.resolve().parents}  # a link to `..` or `/` would walk the whole disk
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen or real in ancestors:
            subfolders[:] = []
            continue
        seen.add(real)
        found += [Path(folder) / name for name in files if has_image_suffix(Path(name))]
    return sorted(found)


def collect_images(root: Path, metadata_path: Path | None = None) -> list[ImageInfo]:
    """Every file with an image extension under `root`, with its caption (metadata.csv, then .txt/.caption)."""
    metadata_file = metadata_path or root / "metadata.csv"
    rows = read_metadata(metadata_file) if metadata_file.is_file() else {}
    out = []
    # broken symlinks are listed too: they are flagged as unreadable instead of silently left out
    for path in _image_files(root):
        rel = path.relative_to(root).as_posix()
        caption = rows.get(normalise_name(rel))
        for ext in (".txt", ".caption"):
            if caption is None and path.with_suffix(ext).is_file():
                caption = read_caption_file(path.with_suffix(ext))
        out.append(ImageInfo(rel, path, None, caption))
    return out


def check_dataset(
    root: Path,
    *,
    resolution: int = 512,
    trigger_word: str = "",
    tokenizer: Any = None,
    metadata_path: Path | None = None,
    family: str | None = None,
) -> DatasetReport:
    """Check a dataset folder; see the module docstring for what is flagged."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder.")
    images = collect_images(root, metadata_path)
    if not images:
        raise DatasetError(f"{root} has no images ({', '.join(IMAGE_EXTENSIONS)}) to check.")
    report = DatasetReport(root, images)
    report.flags = check_images(
        images, resolution=resolution, trigger_word=trigger_word, tokenizer=tokenizer, family=family
    )
    return report


def preflight(cfg: Any, scan: Any) -> DatasetReport:
    """Training's pre-flight: check the scanned items, write the HTML report, refuse errors when configured."""
    root = Path(cfg.train_data_dir)
    images = [
        ImageInfo(item.path.relative_to(root).as_posix(), item.path, None, item.caption)
        for item in scan.items
    ]
    report = DatasetReport(root, images)
    resolution = min(cfg.resolution) if cfg.resolution else 0
    report.flags = check_images(images, resolution=resolution, trigger_word="", family=cfg.model_family)
    html = Path(cfg.output_dir) / "dataset_report.html"
    write_html_report(report, html)
    for flag in report.flags:
        logger.warning("dataset: %s: %s", flag.file, flag.message)
    if report.errors and cfg.dataset_checks == "error":
        raise DatasetError(
            f"the dataset has {len(report.errors)} error(s), e.g. {report.errors[0].file}: {report.errors[0].message}. "
            f"See {html}, or set `dataset_checks: warn`."
        )
    return report
