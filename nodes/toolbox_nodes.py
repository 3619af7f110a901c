"""LoRA toolbox nodes: inspect + self-test, merge LoRAs, resize, merge into a checkpoint.

Inputs are names from ComfyUI's own loras/checkpoints lists; outputs are written only into ComfyUI's first loras
or checkpoints folder, under a sanitised name, never over one of the inputs.
"""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io

from ..lorascripts.host.names import safe_name
from ..lorascripts.models.families import family_names
from .paths import CATEGORY, listed_choices, named_output, node_schema

OWN_FAMILY = "(the LoRA's own family)"
TOOLBOX = f"{CATEGORY}/toolbox"


def _names(kind: str) -> list[str]:
    import folder_paths

    return folder_paths.get_filename_list(kind)


def _path(kind: str, name: str) -> Path:
    import folder_paths

    return Path(folder_paths.get_full_path_or_raise(kind, name))


def _output(kind: str, name: str, inputs: list[Path]) -> Path:
    """<first ComfyUI folder of `kind`>/<safe name>.safetensors; refuses to overwrite an input."""
    import folder_paths

    target = (
        Path(folder_paths.get_folder_paths(kind)[0])
        / f"{safe_name(name).removesuffix('.safetensors')}.safetensors"
    )
    if any(target.resolve() == p.resolve() for p in inputs):
        raise ValueError(f"{target.name} is one of the inputs; choose another output name.")
    return target


def _done(text: str, value: str) -> io.NodeOutput:
    """The node's text on the canvas and its STRING output."""
    return io.NodeOutput(value, ui={"text": [text]})


def _lora_input(name: str, tooltip: str) -> io.Input:
    return io.Combo.Input(name, options=_names("loras"), tooltip=tooltip)


def _weight(name: str, default: float, tooltip: str, optional: bool = False) -> io.Input:
    return io.Float.Input(
        name, default=default, min=-4.0, max=4.0, step=0.05, tooltip=tooltip, optional=optional
    )


def _output_name(default: str, folder: str) -> io.Input:
    return io.String.Input("output_name", default=default, tooltip=f"File name in models/{folder}.")


def _schema(node_id: str, title: str, description: str, inputs: list, output: str) -> io.Schema:
    """A toolbox node: one STRING output, its text also shown on the node."""
    return node_schema(
        node_id,
        title,
        inputs,
        [named_output(io.String, output)],
        category=TOOLBOX,
        description=description,
        is_output_node=True,
    )


class InspectLoRA(io.ComfyNode):
    """What a LoRA holds, and whether every key applies to a base model."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        against = io.Combo.Input(
            "against",
            options=[OWN_FAMILY, *family_names(), *_names("checkpoints")],
            tooltip="Check against a family's standard layout or a real checkpoint (slower, exact).",
        )
        return _schema(
            "InspectLoRA",
            "Inspect / Self-test LoRA",
            "Family, type, rank/alpha, trigger words, training settings, hash, and a self-test per loader.",
            [_lora_input("lora_name", "A LoRA from models/loras."), against],
            "report",
        )

    @classmethod
    def validate_inputs(cls, lora_name: str, against: str) -> bool | str:
        return listed_choices(cls, lora_name=lora_name, against=against)

    @classmethod
    def execute(cls, lora_name: str, against: str) -> io.NodeOutput:
        from ..lorascripts.errors import ModelError
        from ..lorascripts.toolbox.inspect import format_inspection, inspect_lora
        from ..lorascripts.toolbox.selftest import self_test

        path = _path("loras", lora_name)
        target = None if against == OWN_FAMILY else against
        if target and target not in family_names():
            target = str(_path("checkpoints", target))
        try:
            checked = self_test(path, target).summary()
        except ModelError as exc:  # a family the self-test has no rules for: say so, keep the inspection
            checked = f"self-test: {exc}"
        text = format_inspection(inspect_lora(path)) + "\n" + checked
        return _done(text, text)


class MergeLoRAs(io.ComfyNode):
    """Two or three LoRAs with weights -> one LoRA (exact, or SVD to a rank)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        rank = io.Int.Input(
            "rank", default=0, min=0, max=1024, tooltip="0: exact (ranks add up); N: SVD to rank N."
        )
        third = io.Combo.Input(
            "lora_3",
            options=[*_names("loras"), "none"],
            default="none",
            optional=True,
            tooltip="Optional third LoRA.",
        )
        inputs = [
            _lora_input("lora_1", "First LoRA."),
            _weight("weight_1", 1.0, "Weight of the first LoRA."),
            _lora_input("lora_2", "Second LoRA."),
            _weight("weight_2", 1.0, "Weight of the second LoRA."),
            rank,
            _output_name("merged_lora", "loras"),
            third,
            _weight("weight_3", 1.0, "Weight of the third LoRA.", optional=True),
        ]
        description = "Σ weight·LoRA as one file in models/loras; rank 0 keeps the exact stacked update."
        return _schema("MergeLoRAs", "Merge LoRAs", description, inputs, "lora_name")

    @classmethod
    def validate_inputs(cls, lora_1: str, lora_2: str, lora_3: str = "none") -> bool | str:
        return listed_choices(cls, lora_1=lora_1, lora_2=lora_2, lora_3=lora_3)

    @classmethod
    def execute(
        cls,
        lora_1: str,
        weight_1: float,
        lora_2: str,
        weight_2: float,
        rank: int,
        output_name: str,
        lora_3: str = "none",
        weight_3: float = 1.0,
    ) -> io.NodeOutput:
        from ..lorascripts.toolbox.merge import merge_loras

        inputs = [(_path("loras", lora_1), weight_1), (_path("loras", lora_2), weight_2)]
        if lora_3 != "none":
            inputs.append((_path("loras", lora_3), weight_3))
        target = _output("loras", output_name, [p for p, _ in inputs])
        merge_loras(inputs, target, rank=rank or None)
        return _done(f"wrote {target.name}", target.name)


class ResizeLoRA(io.ComfyNode):
    """SVD rank reduction: a fixed rank, or the rank that keeps a fraction of each update's energy."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [
            _lora_input("lora_name", "The LoRA to shrink."),
            io.Combo.Input(
                "mode",
                options=["rank", "energy"],
                tooltip="rank: fixed rank; energy: keep this fraction per layer.",
            ),
            io.Int.Input("rank", default=8, min=1, max=1024, tooltip="Target rank (mode rank)."),
            io.Float.Input(
                "energy", default=0.95, min=0.01, max=1.0, step=0.01, tooltip="Fraction kept (mode energy)."
            ),
            _output_name("resized_lora", "loras"),
        ]
        description = "Smaller LoRA file; the report says how much of each update was kept."
        return _schema("ResizeLoRA", "Resize LoRA", description, inputs, "lora_name")

    @classmethod
    def validate_inputs(cls, lora_name: str, mode: str) -> bool | str:
        return listed_choices(cls, lora_name=lora_name, mode=mode)

    @classmethod
    def execute(cls, lora_name: str, mode: str, rank: int, energy: float, output_name: str) -> io.NodeOutput:
        from ..lorascripts.toolbox.resize import resize_lora

        source = _path("loras", lora_name)
        target = _output("loras", output_name, [source])
        result = resize_lora(
            source, target, rank=rank if mode == "rank" else None, energy=energy if mode == "energy" else None
        )
        ranks = sorted(set(result.ranks.values()))
        text = f"wrote {target.name}: ranks {ranks[0]}..{ranks[-1]}, ≥{result.min_energy:.3f} of each update kept"
        return _done(text, target.name)


class MergeLoRAIntoCheckpoint(io.ComfyNode):
    """Bake a LoRA into a checkpoint (a new file in models/checkpoints that every app loads)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [
            io.Combo.Input(
                "ckpt_name",
                options=_names("checkpoints"),
                tooltip="Base single-file .safetensors checkpoint.",
            ),
            _lora_input("lora_name", "The LoRA to bake in."),
            _weight("weight", 1.0, "Strength of the LoRA."),
            _output_name("merged_checkpoint", "checkpoints"),
        ]
        description = "Checkpoint + weight·LoRA written as a new single-file .safetensors checkpoint."
        return _schema("MergeIntoCheckpoint", "Merge LoRA into Checkpoint", description, inputs, "ckpt_name")

    @classmethod
    def validate_inputs(cls, ckpt_name: str, lora_name: str) -> bool | str:
        return listed_choices(cls, ckpt_name=ckpt_name, lora_name=lora_name)

    @classmethod
    def execute(cls, ckpt_name: str, lora_name: str, weight: float, output_name: str) -> io.NodeOutput:
        from ..lorascripts.toolbox.merge import merge_into_checkpoint

        checkpoint, lora = _path("checkpoints", ckpt_name), _path("loras", lora_name)
        target = _output("checkpoints", output_name, [checkpoint])
        counts = merge_into_checkpoint(checkpoint, [(lora, weight)], target)
        text = f"wrote {target.name}: {counts['merged']} layers changed, {counts['skipped']} LoRA modules skipped"
        return _done(text, target.name)
