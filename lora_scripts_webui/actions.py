"""What the tab's buttons do, without gradio: plain values in, plain values out.

Errors are raised as `UserError` with a message the tab shows as is; nothing here touches gradio, so the
behaviour is tested without a browser and the UI layer stays a thin wiring file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorascripts.config import TrainConfig
from lorascripts.errors import LoraScriptsError

from . import hooks

logger = logging.getLogger(__name__)
CAPTIONERS = ["wd14", "blip", "florence2", "qwen-vl", "joycaption"]
CAPTION_MODES = ["skip_existing", "overwrite", "append"]


class UserError(Exception):
    """A problem the user fixes in the form; the message says how."""


NETWORK_NOTE = (
    " This WebUI is reachable from the network (--listen / --share), so lora-scripts reads and writes only "
    "inside the WebUI's folder; start it with --enable-insecure-extension-access to trust its users."
)


def _network_confined(path: Path, what: str) -> Path:
    """On a WebUI others can reach, `path` must lie inside the WebUI's folder, without symlinks leading out."""
    if not hooks.reachable_from_network():
        return path
    from lorascripts.host.safety import confine, refuse_links_leaving

    try:
        resolved = confine(path, [hooks.webui_root()], what)
        if resolved.is_dir():
            refuse_links_leaving(resolved, [hooks.webui_root()])
    except LoraScriptsError as exc:
        raise UserError(f"{exc}{NETWORK_NOTE}") from None
    return path


def dataset_folder(text: str) -> Path:
    """The dataset folder typed in the form; it must exist and hold images."""
    from lorascripts.caption.labeler import list_images

    if not text or not text.strip():
        raise UserError("Enter the folder that holds your training images.")
    folder = _network_confined(Path(text.strip().strip('"')).expanduser(), "the dataset folder")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder. Enter the full path of your image folder.")
    if not list_images(folder):
        raise UserError(f"{folder} has no images (png, jpg, webp, ...).")
    return folder


def load_table(text: str) -> tuple[list[list[str]], str]:
    """[file, caption] rows from metadata.csv or .txt sidecars; images without a caption get an empty one."""
    from lorascripts.caption.labeler import existing_captions, list_images

    folder = dataset_folder(text)
    names = list_images(folder)
    try:
        captions = existing_captions(folder, folder / "metadata.csv", names)
    except LoraScriptsError as exc:
        raise UserError(str(exc)) from None
    rows = [[name, captions.get(name, "")] for name in names]
    missing = sum(1 for _, caption in rows if not caption)
    note = f"{len(rows)} images" + (f", {missing} without a caption" if missing else ", all captioned")
    return rows, note


def _rows(table: Any) -> list[list[str]]:
    """The table's value as rows, whether gradio hands over a list or a pandas DataFrame."""
    if hasattr(table, "values") and hasattr(table, "columns"):
        table = table.values.tolist()
    return [[str(cell if cell is not None else "") for cell in row[:2]] for row in table or [] if row]


def save_table(text: str, table: Any) -> str:
    """Write the edited captions to <dataset>/metadata.csv (atomically). Only images of that folder count."""
    from lorascripts.caption.labeler import list_images
    from lorascripts.data.captions import write_metadata

    folder = dataset_folder(text)
    known = set(list_images(folder))
    rows: dict[str, str] = {}
    for name, caption in _rows(table):
        name = name.strip().replace("\\", "/")
        if not name:
            continue
        if name not in known:
            raise UserError(f"{name} is not an image in {folder}; reload the table before saving.")
        rows[name] = " ".join(caption.split())
    write_metadata(folder / "metadata.csv", rows)
    return f"saved {len(rows)} captions to {folder / 'metadata.csv'}"


def caption_now(
    text: str, captioner: str, model: str, trigger: str, mode: str, preset: str = "long"
) -> tuple[list[list[str]], str]:
    """Caption the folder into its metadata.csv (in a child process of the engine's Python: the captioning
    libraries may live only in the engine's environment), then return the refreshed table."""
    from lorascripts.host.children import CaptionRequest, caption_in_child

    folder = dataset_folder(text)
    if captioner not in CAPTIONERS or mode not in CAPTION_MODES:
        raise UserError(f"choose a captioner from {CAPTIONERS} and a mode from {CAPTION_MODES}.")
    request = CaptionRequest(
        folder, folder / "metadata.csv", captioner, model.strip(), trigger.strip(), mode, preset=preset
    )
    try:
        result = caption_in_child(request)
    except (LoraScriptsError, OSError) as exc:
        raise UserError(f"captioning failed: {exc}") from None
    rows, note = load_table(text)
    failed = result.get("failed") or {}
    failed_note = f"; could not read {', '.join(failed)}" if failed else ""
    return rows, f"captioned {result.get('captioned', 0)} images with {captioner} ({note}){failed_note}"


@dataclass
class TrainForm:
    """The tab's training fields (numbers left None take the preset's value, else the config schema's:
    `lorascripts.host.form`, the one form -> config step both hosts use)."""

    dataset: str
    checkpoint: str
    lora_name: str
    preset: str = "style"
    rank: int | None = None
    alpha: float | None = None
    steps: int | None = None  # None or 0: train for the preset's epochs
    learning_rate: float | None = None
    resolution: int | None = None  # None or 0: the model family's
    batch_size: int | None = None
    trigger_word: str = ""
    preferred_weight: float | None = None
    sample_prompt: str = ""
    advanced_yaml: str = ""
    memory_preset: str = "off"  # diffusion transformers: host/form.py's CHOICE_FIELDS
    parts: dict[str, str] = field(
        default_factory=dict
    )  # part-file key -> a title of hooks.part_files (parts.py)


def base_model_file(choice: str) -> str:
    """A checkpoint title from the WebUI's list, or a path to a checkpoint file or diffusers folder."""
    listed = hooks.checkpoints()
    if choice in listed:
        return listed[choice]
    if choice and Path(choice).expanduser().exists():
        return str(_network_confined(Path(choice).expanduser(), "the base model"))
    raise UserError(f"base model {choice!r} is not in the WebUI's checkpoint list; press the refresh button.")


def part_file(key: str, kind: str, choice: str | None) -> str | None:
    """A part-file title from the WebUI's folder for that kind, a path to a file, or None (found automatically)."""
    from lorascripts.host.parts import AUTOMATIC

    if not choice or choice == AUTOMATIC:
        return None
    listed = hooks.part_files(kind)
    if choice in listed:
        return listed[choice]
    path = Path(choice.strip().strip('"')).expanduser()
    if path.is_file():
        return str(_network_confined(path, f"the {key} file"))
    folder = hooks.PART_FOLDERS[kind][1]
    raise UserError(
        f"{key} {choice!r} is not a file in models/{folder}; press the refresh button or give a path."
    )


def _part_paths(parts: dict[str, str]) -> dict[str, str | None]:
    from lorascripts.host.parts import part_fields

    kinds = {spec.key: spec.kind for spec in part_fields()}
    unknown = set(parts) - set(kinds)
    if unknown:
        raise UserError(f"unknown part files {sorted(unknown)}; known: {', '.join(kinds)}.")
    return {key: part_file(key, kinds[key], choice) for key, choice in parts.items()}


NUMBERS = ("rank", "alpha", "steps", "learning_rate", "resolution", "batch_size", "preferred_weight")


def build_config(form: TrainForm) -> TrainConfig:
    """The validated engine config for the form (errors show before training); relative paths in the
    advanced YAML are taken from the WebUI's folder."""
    from lorascripts.host.form import HostForm, RequestRoots, form_config

    network = hooks.reachable_from_network()
    try:
        host_form = HostForm(
            base_model=base_model_file(form.checkpoint),
            dataset=str(dataset_folder(form.dataset)),
            paths_base=hooks.webui_root(),
            output_dir=str(hooks.work_dir()),
            preset=form.preset,
            values={name: getattr(form, name) for name in NUMBERS},
            choices={"memory_preset": form.memory_preset},
            parts=_part_paths(form.parts),
            trigger_word=form.trigger_word,
            sample_prompt=form.sample_prompt,
            advanced_yaml=form.advanced_yaml,
            tokenizer_roots=hooks.tokenizer_roots(),
            roots=RequestRoots([hooks.webui_root()], [hooks.work_dir()]) if network else None,
        )
        return form_config(host_form)
    except LoraScriptsError as exc:
        raise UserError(str(exc) + (NETWORK_NOTE if network else "")) from None
