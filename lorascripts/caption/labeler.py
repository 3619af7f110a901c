"""Caption a folder: metadata.csv and/or .txt sidecars, modes, post-processing, and resume after interruption.

Finished captions are appended to `<output>.partial` (JSON lines, flushed per batch) while the run goes; a rerun
after a crash or Ctrl+C takes them from there instead of captioning those images again. The final
metadata.csv is written atomically at the end and the partial file removed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..data.captions import read_caption_file, read_metadata, write_metadata
from ..data.images import IMAGE_EXTENSIONS, is_image, load_image
from ..errors import DatasetError
from ..fileio import atomic_write_text
from .base import Captioner
from .postprocess import CaptionRules, finish_caption

logger = logging.getLogger(__name__)
MODES = ("overwrite", "append", "skip_existing")
FORMATS = ("csv", "txt", "both")


@dataclass
class LabelResult:
    captions: dict[str, str] = field(default_factory=dict)  # relative file name -> caption written
    captioned: int = 0
    kept: int = 0
    resumed: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # relative file name -> reason


def list_images(root: Path) -> list[str]:
    """Relative (`/`-separated) names of every image in `root` and its subfolders."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder of images.")
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if is_image(p) and ".cache" not in p.parts
    )


def existing_captions(root: Path, output: Path, names: list[str]) -> dict[str, str]:
    """Captions already there: `output` (metadata.csv) first, then `.txt` sidecars beside the images."""
    rows = read_metadata(output) if output.is_file() else {}
    for name in names:
        sidecar = (root / name).with_suffix(".txt")
        if name not in rows and sidecar.is_file():
            rows[name] = read_caption_file(sidecar)
    return rows


def _read_partial(path: Path) -> dict[str, str]:
    done: dict[str, str] = {}
    if path.is_file():
        # a kill can cut the last line anywhere, even inside a multi-byte character: such lines are redone
        for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(row, dict)
                and isinstance(row.get("file"), str)
                and isinstance(row.get("caption"), str)
            ):
                done[row["file"]] = row["caption"]
    return done


def auto_label(
    root: Path,
    captioner: Captioner,
    output: Path | None = None,
    *,
    mode: str = "overwrite",
    fmt: str = "csv",
    rules: CaptionRules | None = None,
    show_progress: bool = True,
) -> LabelResult:
    """Caption every image under `root`; returns what was written. Unreadable images are reported, not fatal."""
    if mode not in MODES or fmt not in FORMATS:
        raise DatasetError(f"mode must be one of {MODES} and format one of {FORMATS}.")
    rules = rules or CaptionRules()
    output = output or root / "metadata.csv"
    if output.is_dir():
        raise DatasetError(f"--output {output} is a folder; give the metadata.csv file to write.")
    names = list_images(root)
    if not names:
        raise DatasetError(f"{root} has no images ({', '.join(IMAGE_EXTENSIONS)}) to caption.")
    output.parent.mkdir(parents=True, exist_ok=True)
    existing = existing_captions(root, output, names)
    partial = output.with_name(output.name + ".partial")
    done = _read_partial(partial)
    result = LabelResult(resumed=len(done))
    todo = [n for n in names if n not in done and not (mode == "skip_existing" and existing.get(n))]
    result.kept = sum(1 for n in names if mode == "skip_existing" and existing.get(n))
    with (
        open(partial, "a", encoding="utf-8") as log,
        tqdm(total=len(todo), desc=f"captioning ({captioner.name})", disable=not show_progress) as bar,
    ):
        for start in range(0, len(todo), max(1, captioner.batch_size)):
            batch, images = [], []
            for name in todo[start : start + captioner.batch_size]:
                try:
                    images.append(load_image(root / name))
                    batch.append(name)
                except DatasetError as exc:
                    result.failed[name] = str(exc)
                    logger.warning("%s", exc)
            for name, raw in zip(batch, captioner.caption(images) if images else []):
                previous = existing.get(name) if mode == "append" else None
                caption = finish_caption(raw, rules, previous)
                done[name] = caption
                log.write(json.dumps({"file": name, "caption": caption}, ensure_ascii=False) + "\n")
                result.captioned += 1
            log.flush()
            bar.update(len(batch) + (len(images) - len(batch)))
    final = {n: done.get(n, existing.get(n, "")) for n in names if n in done or n in existing}
    if fmt in ("csv", "both"):
        write_metadata(output, final)
    if fmt in ("txt", "both"):
        for name in done:
            atomic_write_text((root / name).with_suffix(".txt"), done[name])
    partial.unlink(missing_ok=True)
    result.captions = final
    return result
