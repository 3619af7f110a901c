"""LoadDataset and AutoCaption: a folder (or an IMAGE batch) becomes a DATASET the trainer reads."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from comfy_api.latest import io

from ..lorascripts.caption.prompts import PRESETS as CAPTION_PRESETS
from .paths import (
    checked_dataset,
    listed_choices,
    local_model_path,
    named_output,
    node_schema,
    resolve_input_folder,
    work_root,
)

logger = logging.getLogger(__name__)
DATASET = io.Custom("LORA_SCRIPTS_DATASET")


def _preview(folder: Path, files: list[str], limit: int = 16) -> Any:
    """IMAGE batch (N, H, W, 3) of the first images, letterboxed to a common 256x256."""
    import numpy as np
    import torch
    from PIL import Image

    from ..lorascripts.data.images import load_image
    from ..lorascripts.errors import DatasetError

    tiles = []
    for name in files[:limit]:
        try:
            image = load_image(folder / name)
        except DatasetError:
            continue  # the preview skips it; training names the file (or skips it, as configured)
        image.thumbnail((256, 256))
        canvas = Image.new("RGB", (256, 256), (0, 0, 0))
        canvas.paste(image, ((256 - image.width) // 2, (256 - image.height) // 2))
        tiles.append(torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0))
    return torch.stack(tiles) if tiles else torch.zeros(1, 64, 64, 3)


def _dataset(folder: Path, metadata_path: Path | None) -> dict[str, Any]:
    from ..lorascripts.caption.labeler import existing_captions, list_images

    files = list_images(folder)
    if not files:
        raise ValueError(f"no images in {folder}.")
    meta = metadata_path or folder / "metadata.csv"
    return {
        "folder": str(folder),
        "metadata_path": str(meta) if meta.is_file() else None,
        "files": files,
        "captions": existing_captions(folder, meta, files),
    }


def _from_batch(images: Any, captions: str) -> Path:
    """Write an IMAGE batch + one caption per line into <output>/lora-scripts/datasets/<hash>/."""
    import numpy as np
    from PIL import Image

    from ..lorascripts.data.captions import write_metadata

    arrays = (images.cpu().numpy().clip(0, 1) * 255).round().astype(np.uint8)
    digest = hashlib.sha256(arrays.tobytes() + captions.encode()).hexdigest()[:16]
    folder = work_root() / "datasets" / digest
    folder.mkdir(parents=True, exist_ok=True)
    lines = [c.strip() for c in captions.splitlines()]
    rows = {}
    for i, array in enumerate(arrays):
        name = f"image_{i:04d}.png"
        Image.fromarray(array).save(folder / name)
        rows[name] = lines[i] if i < len(lines) else ""
    write_metadata(folder / "metadata.csv", rows)
    return folder


class LoadDataset(io.ComfyNode):
    """A training dataset: a folder under ComfyUI's input directory, or images + captions from the graph."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            "LoadDataset",
            "Load Dataset",
            description="Load a folder of training images (metadata.csv or .txt captions) or an IMAGE batch.",
            inputs=[
                io.String.Input(
                    "folder",
                    default="my_dataset",
                    tooltip="Folder inside ComfyUI's input directory "
                    "with images and metadata.csv (file_name,caption) or .txt captions.",
                ),
                io.Image.Input("images", optional=True, tooltip="Use these images instead of a folder."),
                io.String.Input(
                    "captions",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="One caption per image (one per line), used with `images`.",
                ),
                io.Boolean.Input(
                    "allow_absolute_path",
                    default=False,
                    optional=True,
                    tooltip="Allow a folder outside the input directory (an absolute path).",
                ),
            ],
            outputs=[
                named_output(DATASET, "dataset"),
                named_output(io.Image, "preview"),
                named_output(io.String, "captions"),
            ],
        )

    @classmethod
    def execute(
        cls, folder: str, images: Any = None, captions: str = "", allow_absolute_path: bool = False
    ) -> io.NodeOutput:
        root = (
            _from_batch(images, captions)
            if images is not None
            else resolve_input_folder(folder, allow_absolute_path)
        )
        if not root.is_dir():
            raise ValueError(
                f"dataset folder {root} does not exist. Put your images in ComfyUI/input/{folder}."
            )
        data = _dataset(root, None)
        text = "\n".join(f"{n}: {data['captions'].get(n, '')}" for n in data["files"])
        return io.NodeOutput(data, _preview(root, data["files"]), text)


CAPTIONERS = ["blip", "florence2", "wd14", "qwen-vl", "joycaption"]
CAPTIONER_TOOLTIP = (
    "blip: sentences; florence2: detailed sentences; wd14: booru tags; qwen-vl (Qwen2.5-VL / Qwen3-VL) and "
    "joycaption: vision-language models, asked by `preset`."
)


class AutoCaption(io.ComfyNode):
    """Caption a DATASET with BLIP, Florence-2 or WD14; captions go to a metadata.csv under ComfyUI's output."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            "AutoCaption",
            "Auto Caption",
            description="Write captions for every image; edit them in the list on the node.",
            inputs=[
                DATASET.Input("dataset", tooltip="From Load Dataset."),
                io.Combo.Input("captioner", options=CAPTIONERS, default="blip", tooltip=CAPTIONER_TOOLTIP),
                io.String.Input("trigger_word", default="", tooltip="Put first in every caption."),
                io.Combo.Input(
                    "mode",
                    options=["skip_existing", "overwrite", "append"],
                    default="skip_existing",
                    tooltip="What to do with images that already have a caption.",
                ),
                io.String.Input(
                    "model",
                    default="",
                    optional=True,
                    tooltip="Hugging Face id or local folder of the captioning model (empty: the captioner's "
                    "default).",
                ),
                io.Int.Input(
                    "batch_size", default=4, min=1, max=64, optional=True, tooltip="Images per batch."
                ),
                io.Combo.Input(
                    "preset",
                    options=list(CAPTION_PRESETS),
                    default="long",
                    optional=True,
                    tooltip="qwen-vl / joycaption: long or short description, the style, the character, "
                    "or booru-like tags.",
                ),
            ],
            outputs=[
                named_output(DATASET, "dataset"),
                named_output(io.String, "captions"),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, captioner: str, mode: str, preset: str = "long") -> bool | str:
        return listed_choices(cls, captioner=captioner, mode=mode, preset=preset)

    @classmethod
    def execute(
        cls,
        dataset: dict,
        captioner: str,
        trigger_word: str,
        mode: str,
        model: str = "",
        batch_size: int = 4,
        preset: str = "long",
    ) -> io.NodeOutput:
        import comfy.model_management as mm

        from ..lorascripts.errors import StopRequested
        from ..lorascripts.host.children import CaptionRequest, caption_in_child

        dataset = checked_dataset(dataset)
        model = local_model_path(model) if model.strip() else ""
        folder = Path(dataset["folder"])
        out = _captions_file(folder, dataset.get("metadata_path"))
        mm.unload_all_models()
        mm.soft_empty_cache()
        # a child of the engine's Python: the captioners' libraries may live only in the engine environment
        request = CaptionRequest(
            folder, out, captioner, model, trigger_word.strip(), mode, batch_size, preset=preset
        )
        try:
            caption_in_child(request, should_cancel=mm.processing_interrupted)
        except StopRequested:
            mm.throw_exception_if_processing_interrupted()  # ComfyUI's own "interrupted", not an error dialog
            raise
        data = _dataset(folder, out)
        rows = [{"file": n, "caption": data["captions"].get(n, "")} for n in data["files"]]
        text = "\n".join(f"{r['file']}: {r['caption']}" for r in rows)
        return io.NodeOutput(
            data, text, ui={"lora_scripts_captions": [{"metadata_path": str(out), "rows": rows}]}
        )


def _captions_file(folder: Path, metadata_path: str | None) -> Path:
    """<output>/lora-scripts/captions/<folder>-<hash>/metadata.csv, started from the user's captions (which are
    never edited)."""
    import shutil

    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    out = work_root() / "captions" / f"{folder.name}-{digest}" / "metadata.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    if metadata_path and not out.exists():
        shutil.copyfile(metadata_path, out)
    return out
