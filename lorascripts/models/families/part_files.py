"""Finding the part files a diffusion-transformer file does not hold (VAE, text encoders), shared by the DiT
families: the file the config names, beside the transformer, or in the ComfyUI `models/` folder the transformer
sits in (`models/unet` / `models/diffusion_models` -> `models/vae`, `models/clip`, `models/text_encoders`).
Nothing is downloaded. Each family gives its file names and folders (FLUX.1: flux1/find.py; Z-Image: zimage/).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ...errors import ModelError

logger = logging.getLogger(__name__)
TRANSFORMER_FOLDERS = ("unet", "diffusion_models", "checkpoints")


@dataclass(frozen=True)
class PartFile:
    """One part kept in a file of its own: its config key, how messages name it, the file names in the order
    they are preferred (full precision before fp8) and the ComfyUI `models/` folders it lives in."""

    config_key: str
    label: str
    names: tuple[str, ...]
    comfy_folders: tuple[str, ...]


def part_folders(part: PartFile, transformer: Path) -> list[Path]:
    """Where a part is looked for: beside the transformer, then ComfyUI's folders for it."""
    folders = [transformer.parent]
    if transformer.parent.name in TRANSFORMER_FOLDERS:
        folders += [transformer.parent.parent / name for name in part.comfy_folders]
    return folders


def find_part_file(
    part: PartFile, given: str | None, transformer: Path, family_label: str, *, announce: bool = True
) -> Path:
    """The file of one part: `given` (the config's key) or the first one found, logged unless `announce` is
    false (the pre-flight estimate looks before the load does); ModelError naming where it looked and the key to
    set."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise ModelError(
                f"{part.config_key} file {given} does not exist (the {part.label} of {transformer.name})."
            )
        return path
    folders = part_folders(part, transformer)
    for folder in folders:
        for name in part.names:
            if (folder / name).is_file():
                if announce:
                    logger.info("%s: %s", part.config_key, folder / name)
                return folder / name
    looked = ", ".join(str(f) for f in folders)
    raise ModelError(
        f"{transformer.name} holds only the {family_label} transformer; its {part.label} was not found (looked "
        f"in {looked} for {', '.join(part.names)}). Set `{part.config_key}` to the file's path."
    )
