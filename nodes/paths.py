"""Where the nodes read and write: ComfyUI's own folders only (the rules are in lorascripts.host.safety).

A ComfyUI server may be reachable from a network, and ComfyUI passes a literal value for any custom input
type (our DATASET included) straight to the node, so every node re-checks the paths it is given here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import folder_paths
from comfy_api.latest import io

from ..lorascripts.host.safety import (
    ALLOW_ABSOLUTE_ENV,
    absolute_paths_allowed,
    confine,
    inside,
    plain_text,
    refuse_links_leaving,
)

CATEGORY = "lora-scripts"
# ComfyUI's folders (folder_paths names) of base models: checkpoints, then diffusion transformers (models/unet and
# models/diffusion_models, one name in ComfyUI >= 0.3); and of each kind of part file (lorascripts.host.parts)
BASE_MODEL_FOLDERS = ("checkpoints", "diffusion_models")
PART_FOLDERS = {"vae": "vae", "text_encoder": "text_encoders"}  # text_encoders covers models/clip too


def node_schema(
    node_id: str, title: str, inputs: list, outputs: list, category: str = CATEGORY, **options: Any
) -> io.Schema:
    """One of our nodes' V3 schemas: id `LoraScripts<node_id>` (the ids saved workflows use), shown as
    `<title> (lora-scripts)` in our menu category; `options` are further `io.Schema` fields."""
    return io.Schema(
        node_id=f"LoraScripts{node_id}",
        display_name=f"{title} (lora-scripts)",
        category=category,
        inputs=inputs,
        outputs=outputs,
        **options,
    )


def listed_choices(node: type[io.ComfyNode], **values: Any) -> bool | str:
    """True, or which list widget holds a value its list does not: ComfyUI 0.3.75 checks the value of a V1 list
    widget against the list, but not that of a V3 Combo, and a request may send anything (validate_inputs)."""
    options = {i.id: i.options for i in node.define_schema().inputs if isinstance(i, io.Combo.Input)}
    for name, value in values.items():
        if value is not None and value not in options[name]:
            shown = ", ".join(map(str, options[name][:20])) + (", ..." if len(options[name]) > 20 else "")
            return f"{name} {value!r} is not in its list ({shown or 'empty'}); choose one of those."
    return True


def named_output(kind: Any, name: str, tooltip: str | None = None) -> Any:
    """A V3 output shown as `name` (its id differs: V3 wants output ids apart from the input ids, and saved
    workflows address outputs by position and shown name only)."""
    return kind.Output(f"out_{name}", display_name=name, tooltip=tooltip)


_APPROVED: set[Path] = set()  # absolute dataset folders Load Dataset accepted in this server process


def work_root() -> Path:
    """Everything the nodes write besides LoRA files: <output>/lora-scripts/."""
    return Path(folder_paths.get_output_directory()) / "lora-scripts"


def loras_dir() -> Path:
    return Path(folder_paths.get_folder_paths("loras")[0])


def input_dir() -> Path:
    return Path(folder_paths.get_input_directory())


def read_roots() -> list[Path]:
    """Folders a request may make us read: ComfyUI's models (every configured folder), input and output."""
    roots = [Path(folder_paths.models_dir), input_dir(), Path(folder_paths.get_output_directory())]
    for kind in ("checkpoints", "loras", *BASE_MODEL_FOLDERS[1:], *PART_FOLDERS.values()):
        roots += [Path(p) for p in folder_paths.get_folder_paths(kind)]
    return roots


def base_model_names() -> list[str]:
    """Train LoRA's base-model list: the checkpoints, then the diffusion transformers not named like one."""
    names: dict[str, None] = {}
    for kind in BASE_MODEL_FOLDERS:
        names.update(dict.fromkeys(folder_paths.get_filename_list(kind)))
    return list(names)


def base_model_path(name: str) -> str:
    """The file of a base-model list entry (a checkpoint wins over a diffusion model of the same name)."""
    for kind in BASE_MODEL_FOLDERS[:-1]:
        found = folder_paths.get_full_path(kind, name)
        if found:
            return found
    return folder_paths.get_full_path_or_raise(BASE_MODEL_FOLDERS[-1], name)


def server_allows_absolute() -> bool:
    """Absolute paths need the node's switch and a server only this machine reaches (or the owner's opt-in)."""
    from comfy.cli_args import args

    return absolute_paths_allowed(str(args.listen or "127.0.0.1"))


def _absolute_refused(folder: str) -> str:
    return (
        f"{folder} is outside ComfyUI's input folder, and this server listens on a network address; its owner "
        f"can allow absolute paths by starting ComfyUI with {ALLOW_ABSOLUTE_ENV}=1."
    )


def resolve_input_folder(folder: str, allow_absolute: bool) -> Path:
    """A dataset folder relative to ComfyUI's input directory (absolute paths only when allowed)."""
    path = Path(plain_text(folder, "the dataset folder")).expanduser()
    if path.is_absolute():
        if not allow_absolute:
            raise ValueError(
                f"{folder} is an absolute path; put the dataset under ComfyUI's input folder, or switch on "
                "allow_absolute_path on this node."
            )
        if not server_allows_absolute():
            raise ValueError(_absolute_refused(folder))
        resolved = path.resolve()
        _APPROVED.add(resolved)
    else:
        resolved = (input_dir() / path).resolve()
        if not inside(resolved, input_dir()):
            raise ValueError(f"{folder} points outside ComfyUI's input folder.")
    if resolved.is_dir():
        refuse_links_leaving(resolved, [input_dir(), resolved])
    return resolved


def checked_dataset(dataset: Any) -> dict[str, Any]:
    """A DATASET value as Load Dataset makes it; a request that hand-writes one pointing elsewhere is refused."""
    if not isinstance(dataset, dict) or not isinstance(dataset.get("folder"), str):
        raise ValueError("dataset must come from a Load Dataset node.")
    folder = Path(dataset["folder"]).resolve()
    if folder not in _APPROVED:
        folder = confine(folder, [input_dir(), work_root() / "datasets"], "the dataset folder")
    refuse_links_leaving(folder, [input_dir(), work_root(), folder])
    meta = dataset.get("metadata_path")
    if meta is not None:
        confine(str(meta), [folder, work_root() / "captions"], "the dataset's metadata_path")
    return dataset


def local_model_path(model: str) -> str:
    """A captioner `model` input: a Hugging Face id, or a folder inside ComfyUI's folders (anywhere only where
    absolute paths are allowed)."""
    path = Path(model).expanduser()
    looks_local = path.is_absolute() or model.startswith(".") or ".." in path.parts or path.exists()
    if looks_local and not server_allows_absolute():
        confine(model, read_roots(), "the captioning model folder")
    return model


def tokenizer_roots() -> list[str]:
    """Where ComfyUI keeps the tokenizers it ships (its `comfy` package folder). The training child runs in the
    engine's own Python, where `comfy` need not be importable, so the folder travels in the config."""
    from ..lorascripts.models.tokenizers_find import comfy_package_folder

    folder = comfy_package_folder()
    return [str(folder)] if folder else []
