"""Find the training images and their captions.

Layouts (all can be mixed): images directly in `train_data_dir`; kohya repeat folders `N_name/` (each image
seen N times per epoch); captions from `metadata.csv` (`file_name,caption`), else `.txt`/`.caption` sidecars.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .caption_proc import split_tags, with_trigger
from .captions import normalise_name, read_caption_file, read_metadata
from .images import IMAGE_EXTENSIONS, check_image, dangling_images, is_image

logger = logging.getLogger(__name__)
REPEAT_DIR = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class DatasetItem:
    """One training image."""

    path: Path
    caption: str
    repeats: int = 1
    subset: str = ""


@dataclass
class ScanResult:
    """The images found, what was skipped, and kohya's dataset metadata."""

    items: list[DatasetItem]
    warnings: list[str] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    dataset_dirs: dict[str, dict[str, int]] = field(default_factory=dict)
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)


def _subsets(root: Path, warnings: list[str]) -> list[tuple[Path, int, str]]:
    """(folder, repeats, name) of the root and of every `N_name` subfolder.

    A subfolder that is a symlink back to a folder already scanned (a loop, or two links to one folder) is
    skipped with a warning: it would train the same images twice.
    """
    found = [(root, 1, root.name)]
    seen = {root.resolve()}
    children = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for child in sorted(children, key=lambda p: (p.is_symlink(), p.name)):  # real folders win over links
        m = REPEAT_DIR.match(child.name)
        if not m:
            continue
        real = child.resolve()
        if real in seen or real in root.resolve().parents:
            warnings.append(f"skipping {child}: it links to a folder already in the dataset ({real}).")
            continue
        seen.add(real)
        found.append((child, max(1, int(m[1])), child.name))
    return found


def _sidecar(path: Path, extensions: tuple[str, ...]) -> str | None:
    for ext in extensions:
        sidecar = path.with_suffix(ext)
        if sidecar.is_file():
            return read_caption_file(sidecar)
    return None


def _missing_error(root: Path, missing: list[Path]) -> DatasetError:
    names = ", ".join(p.relative_to(root).as_posix() for p in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return DatasetError(
        f"{len(missing)} image(s) have no caption (no row in metadata.csv, no .txt/.caption file): {names}{more}. "
        "Add captions, caption the folder with tools/auto_label.py, or set `missing_captions: trigger` "
        "(or folder_name / empty)."
    )


def _fallback_caption(path: Path, policy: str, trigger_word: str, subset: str) -> str:
    if policy == "trigger":
        return trigger_word
    if policy == "folder_name":
        m = REPEAT_DIR.match(subset)
        return (m[2] if m else subset).replace("_", " ")
    return ""


def _readable_images(folder: Path, bad_images: str, result: ScanResult) -> list[Path]:
    """The images of one folder that decode; the others raise (`bad_images: error`) or are recorded as skipped."""
    skipped = dangling_images(folder)
    problems = [
        DatasetError(f"{p} is a broken symlink (or a symlink loop). Fix or delete the link.") for p in skipped
    ]
    readable = []
    for path in sorted(p for p in folder.iterdir() if is_image(p)):
        try:
            check_image(path)
            readable.append(path)
        except DatasetError as exc:
            problems.append(exc)
            skipped.append(path)
    if problems and bad_images == "error":
        more = (
            f" {len(problems) - 1} more image(s) in {folder} are unreadable too." if len(problems) > 1 else ""
        )
        raise DatasetError(f"{problems[0]}{more}")
    result.warnings += [f"skipping unreadable image: {exc}" for exc in problems]
    result.skipped += skipped
    return readable


@dataclass
class _Captions:
    """Where the captions of one scan come from (metadata.csv rows, else sidecars), and which rows were used."""

    root: Path
    metadata: dict[str, str]
    extensions: tuple[str, ...]
    used_rows: set[str] = field(default_factory=set)

    def find(self, path: Path, folder: Path) -> str | None:
        rel = normalise_name(path.relative_to(self.root).as_posix())
        short = normalise_name(path.name)
        caption = self.metadata.get(rel, self.metadata.get(short) if folder != self.root else None)
        if caption is None:
            return _sidecar(path, self.extensions)
        self.used_rows.add(rel if rel in self.metadata else short)
        return caption

    def unused_rows(self, skipped: list[Path]) -> list[str]:
        """Rows naming no image; rows of skipped images were already warned about as unreadable."""
        used = set(self.used_rows)
        used |= {normalise_name(p.relative_to(self.root).as_posix()) for p in skipped}
        used |= {normalise_name(p.name) for p in skipped}
        return sorted(set(self.metadata) - used)


def _read_rows(root: Path, metadata_path: Path | None) -> dict[str, str]:
    metadata_file = metadata_path or root / "metadata.csv"
    if metadata_path is not None and not metadata_file.is_file():
        raise DatasetError(f"metadata_path {metadata_file} does not exist.")
    return read_metadata(metadata_file) if metadata_file.is_file() else {}


def _add_subset(result: ScanResult, subset: str, repeats: int, count: int, trigger_word: str) -> None:
    """kohya's per-folder metadata: image count, repeats and tag frequency."""
    if not count:
        return
    result.dataset_dirs[subset] = {"n_repeats": repeats, "img_count": count}
    tags = Counter(
        t
        for item in result.items
        if item.subset == subset
        for t in split_tags(with_trigger(item.caption, trigger_word))
    )
    result.tag_frequency[subset] = dict(tags.most_common())


def scan_dataset(
    root: Path,
    *,
    metadata_path: Path | None = None,
    caption_extensions: tuple[str, ...] = (".txt", ".caption"),
    missing_captions: str = "error",
    trigger_word: str = "",
    bad_images: str = "error",
) -> ScanResult:
    """All images under `root` with captions; unreadable images raise (naming the file) or are skipped."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder. Point train_data_dir at the folder with your images.")
    captions = _Captions(root, _read_rows(root, metadata_path), caption_extensions)
    result = ScanResult(items=[])
    missing: list[Path] = []
    for folder, repeats, subset in _subsets(root, result.warnings):
        count = 0
        for path in _readable_images(folder, bad_images, result):
            caption = captions.find(path, folder)
            if caption is None and missing_captions == "error":
                missing.append(path)
                continue
            if caption is None:
                caption = _fallback_caption(path, missing_captions, trigger_word, subset)
            result.items.append(DatasetItem(path, caption, repeats, subset))
            count += 1
        _add_subset(result, subset, repeats, count, trigger_word)
    if missing:
        raise _missing_error(root, missing)
    unused = captions.unused_rows(result.skipped)
    if unused:
        result.warnings.append(
            f"{len(unused)} metadata.csv rows name no image in the dataset (e.g. {unused[0]})."
        )
    if not result.items:
        raise DatasetError(
            f"no usable images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} "
            "directly and in N_name subfolders)."
        )
    return result
