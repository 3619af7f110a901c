"""Where the nodes read and write: ComfyUI's own folders only."""

from __future__ import annotations

from pathlib import Path

import folder_paths

CATEGORY = "lora-scripts"


def work_root() -> Path:
    """Everything the nodes write besides LoRA files: <output>/lora-scripts/."""
    return Path(folder_paths.get_output_directory()) / "lora-scripts"


def loras_dir() -> Path:
    return Path(folder_paths.get_folder_paths("loras")[0])


def inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def resolve_input_folder(folder: str, allow_absolute: bool) -> Path:
    """A dataset folder relative to ComfyUI's input directory (absolute paths only when allowed)."""
    path = Path(folder).expanduser()
    if path.is_absolute():
        if not allow_absolute:
            raise ValueError(
                f"{folder} is an absolute path; put the dataset under ComfyUI's input folder, or switch on "
                "allow_absolute_path on this node."
            )
        return path
    base = Path(folder_paths.get_input_directory())
    resolved = (base / path).resolve()
    if not inside(resolved, base):
        raise ValueError(f"{folder} points outside ComfyUI's input folder.")
    return resolved


def tokenizer_folder() -> str | None:
    """ComfyUI ships the CLIP tokenizer; the training child gets its path (no download)."""
    from ..lorascripts.models.tokenizers_find import comfy_tokenizer_folder

    folder = comfy_tokenizer_folder()
    return str(folder) if folder else None
