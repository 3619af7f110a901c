"""TrainLoRA: trains in a child process, streams progress to ComfyUI, puts the LoRA into the loras folder.

The widgets are the form fields of `lorascripts.host.form` (defaults, ranges and help from the config schema and
the presets); the run goes through `form_config` (the same step as the WebUI tab) and `TrainingJob`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import folder_paths
from comfy_api.latest import io

from ..lorascripts.host.form import (
    CHOICE_FIELDS,
    FIELDS,
    ChoiceField,
    FormField,
    HostForm,
    RequestRoots,
    form_config,
)
from ..lorascripts.host.names import safe_name
from ..lorascripts.host.parts import AUTOMATIC, PartField, part_fields
from ..lorascripts.host.presets import PRESET_CHOICES
from .dataset_nodes import DATASET
from .paths import (
    PART_FOLDERS,
    base_model_names,
    base_model_path,
    checked_dataset,
    listed_choices,
    loras_dir,
    named_output,
    node_schema,
    read_roots,
    tokenizer_roots,
    work_root,
)
from .train_progress import TrainProgress

logger = logging.getLogger(__name__)
PRESET_TOOLTIP = (
    "Sensible settings for the job (rank, alpha, learning rate, epochs and more). A number below left at 0 "
    "keeps the preset's value; any other number overrides it. custom: the config defaults."
)


def _widget(spec: FormField) -> io.Input:
    """A number widget for a form field (ComfyUI sends every widget's value: 0 = unset where it has a meaning)."""
    kind = io.Int if spec.kind is int else io.Float
    return kind.Input(
        spec.name,
        default=spec.node_default,
        min=spec.minimum,
        max=spec.maximum,
        step=spec.step,
        tooltip=spec.tooltip,
    )


def _choice(spec: ChoiceField) -> io.Input:
    return io.Combo.Input(
        spec.name, options=spec.choices, default=spec.default, tooltip=spec.tooltip, optional=True
    )


def _part(spec: PartField) -> io.Input:
    """A part-file list: `AUTOMATIC`, then the files of the ComfyUI folder for that kind of part."""
    files = folder_paths.get_filename_list(PART_FOLDERS[spec.kind])
    return io.Combo.Input(
        spec.key, options=[AUTOMATIC, *files], default=AUTOMATIC, tooltip=spec.tooltip, optional=True
    )


def _part_paths(chosen: dict[str, Any]) -> dict[str, str | None]:
    """The chosen part files as paths (AUTOMATIC: None, the family finds the file)."""
    paths: dict[str, str | None] = {}
    for spec in part_fields():
        name = chosen.get(spec.key) or AUTOMATIC
        folder = PART_FOLDERS[spec.kind]
        paths[spec.key] = None if name == AUTOMATIC else folder_paths.get_full_path_or_raise(folder, name)
    return paths


def _text(
    name: str, tooltip: str, default: str = "", multiline: bool = False, optional: bool = False
) -> io.Input:
    return io.String.Input(name, default=default, multiline=multiline, tooltip=tooltip, optional=optional)


class TrainLoRA(io.ComfyNode):
    """Train a LoRA on a DATASET from a checkpoint; the result is usable by any LoRA loader right away."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            "TrainLoRA",
            "Train LoRA",
            description="Train a kohya-format LoRA (loads in ComfyUI, A1111/Forge, diffusers). "
            "Cancel saves a checkpoint.",
            inputs=[
                io.Combo.Input(
                    "ckpt_name",  # the name saved workflows know, though it lists diffusion models too
                    options=base_model_names(),
                    tooltip="Base model: a checkpoint (SD1.x, SD2.x, SDXL, all-in-one FLUX.1) from "
                    "models/checkpoints, or a diffusion transformer (FLUX.1, ...) from models/diffusion_models "
                    "or models/unet, whose VAE and text-encoder files are chosen below or found. The model "
                    "family comes from the file.",
                ),
                DATASET.Input("dataset", tooltip="From Load Dataset or Auto Caption."),
                _text("lora_name", "File name in models/loras (no extension).", default="my_lora"),
                io.Combo.Input(
                    "preset", options=list(PRESET_CHOICES), default="style", tooltip=PRESET_TOOLTIP
                ),
                *(_widget(spec) for spec in FIELDS if spec.in_node),
                _text("trigger_word", "Prepended to captions; shown on the WebUI card."),
                _text(
                    "advanced_yaml",
                    "Any other config keys as YAML (see the README's config reference), e.g. `network_type: "
                    "locon`. Relative paths are taken from the ComfyUI folder (e.g. models/loras/x.safetensors).",
                    multiline=True,
                    optional=True,
                ),
                _text("sample_prompt", "Rendered during training with a fixed seed.", optional=True),
                # appended after the older widgets: saved workflows fill widgets by position
                *(_choice(spec) for spec in CHOICE_FIELDS),
                *(_part(spec) for spec in part_fields()),
            ],
            outputs=[
                named_output(io.String, "lora_name"),
                named_output(io.Image, "loss_chart"),
                named_output(io.Image, "samples"),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(
        cls,
        ckpt_name: str,
        preset: str,
        memory_preset: str | None = None,
        vae: str | None = None,
        text_encoder: str | None = None,
        text_encoder_2: str | None = None,
    ) -> bool | str:
        # named, not **kwargs: with **kwargs ComfyUI skips its own min/max checks of every input. A part key
        # missing here is still checked when it runs (folder_paths resolves only files of its folder).
        chosen = dict(
            memory_preset=memory_preset, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2
        )
        listed = {spec.name for spec in CHOICE_FIELDS} | {spec.key for spec in part_fields()}
        lists = {name: value for name, value in chosen.items() if name in listed}
        return listed_choices(cls, ckpt_name=ckpt_name, preset=preset, **lists)

    @classmethod
    def execute(
        cls,
        ckpt_name: str,
        dataset: dict,
        lora_name: str,
        preset: str,
        trigger_word: str,
        advanced_yaml: str = "",
        sample_prompt: str = "",
        **numbers: Any,
    ) -> io.NodeOutput:
        from ..lorascripts.host.jobs import TrainingJob

        dataset = checked_dataset(dataset)
        choices = {spec.name: numbers.pop(spec.name, spec.default) for spec in CHOICE_FIELDS}
        parts = _part_paths({spec.key: numbers.pop(spec.key, None) for spec in part_fields()})
        form = HostForm(
            base_model=base_model_path(ckpt_name),
            dataset=dataset["folder"],
            paths_base=Path(folder_paths.base_path),
            output_dir=str(work_root()),
            preset=preset,
            values=numbers,
            choices=choices,
            parts=parts,
            trigger_word=trigger_word,
            sample_prompt=sample_prompt,
            advanced_yaml=advanced_yaml,
            metadata_path=dataset.get("metadata_path"),
            tokenizer_roots=tokenizer_roots(),
            # a request's paths stay inside ComfyUI's folders (the server may be reachable from a network)
            roots=RequestRoots(read_roots(), [work_root()]),
        )
        name = safe_name(lora_name)
        job = TrainingJob(form_config(form, "Train LoRA"), work_root() / "runs" / name, loras_dir(), name)
        result, progress = TrainProgress(cls.hidden.unique_id, numbers.get("steps") or 1).run(job)
        lora_file = result.lora_path.name
        shown = {"lora": lora_file, "reused": result.reused, **progress.recent()}
        return io.NodeOutput(
            lora_file, progress.chart(), progress.sample_images(), ui={"lora_scripts_result": [shown]}
        )
