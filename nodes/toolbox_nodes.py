"""LoRA toolbox nodes: inspect + self-test, merge LoRAs, resize, merge into a checkpoint.

Inputs are names from ComfyUI's own loras/checkpoints lists; outputs are written only into ComfyUI's first loras
or checkpoints folder, under a sanitised name, never over one of the inputs.
"""

from __future__ import annotations

from pathlib import Path

from ..lorascripts.host.names import safe_name
from .paths import CATEGORY

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


def _done(text: str, value: str) -> dict:
    """The node's text on the canvas and its STRING output."""
    return {"ui": {"text": [text]}, "result": (value,)}


def _lora_input(tooltip: str) -> tuple:
    return (_names("loras"), {"tooltip": tooltip})


def _weight(default: float, tooltip: str) -> tuple:
    return ("FLOAT", {"default": default, "min": -4.0, "max": 4.0, "step": 0.05, "tooltip": tooltip})


class InspectLoRA:
    """What a LoRA holds, and whether every key applies to a base model."""

    CATEGORY, FUNCTION, OUTPUT_NODE = TOOLBOX, "inspect", True
    RETURN_TYPES, RETURN_NAMES = ("STRING",), ("report",)
    DESCRIPTION = (
        "Family, type, rank/alpha, trigger words, training settings, hash, and a self-test per loader."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lora_name": _lora_input("A LoRA from models/loras."),
                "against": (
                    [OWN_FAMILY, "sd1", "sd2", "sdxl", *_names("checkpoints")],
                    {
                        "tooltip": "Check against a family's standard layout or a real checkpoint (slower, exact)."
                    },
                ),
            }
        }

    def inspect(self, lora_name: str, against: str) -> dict:
        from ..lorascripts.toolbox.inspect import format_inspection, inspect_lora
        from ..lorascripts.toolbox.selftest import self_test

        path = _path("loras", lora_name)
        target = None if against == OWN_FAMILY else against
        if target and target not in ("sd1", "sd2", "sdxl"):
            target = str(_path("checkpoints", target))
        from ..lorascripts.errors import ModelError

        try:
            checked = self_test(path, target).summary()
        except ModelError as exc:  # a family the self-test has no rules for: say so, keep the inspection
            checked = f"self-test: {exc}"
        text = format_inspection(inspect_lora(path)) + "\n" + checked
        return _done(text, text)


class MergeLoRAs:
    """Two or three LoRAs with weights -> one LoRA (exact, or SVD to a rank)."""

    CATEGORY, FUNCTION, OUTPUT_NODE = TOOLBOX, "merge", True
    RETURN_TYPES, RETURN_NAMES = ("STRING",), ("lora_name",)
    DESCRIPTION = "Σ weight·LoRA as one file in models/loras; rank 0 keeps the exact stacked update."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lora_1": _lora_input("First LoRA."),
                "weight_1": _weight(1.0, "Weight of the first LoRA."),
                "lora_2": _lora_input("Second LoRA."),
                "weight_2": _weight(1.0, "Weight of the second LoRA."),
                "rank": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 1024,
                        "tooltip": "0: exact (ranks add up); N: SVD to rank N.",
                    },
                ),
                "output_name": (
                    "STRING",
                    {"default": "merged_lora", "tooltip": "File name in models/loras."},
                ),
            },
            "optional": {
                "lora_3": (
                    [*_names("loras"), "none"],
                    {"default": "none", "tooltip": "Optional third LoRA."},
                ),
                "weight_3": _weight(1.0, "Weight of the third LoRA."),
            },
        }

    def merge(
        self,
        lora_1: str,
        weight_1: float,
        lora_2: str,
        weight_2: float,
        rank: int,
        output_name: str,
        lora_3: str = "none",
        weight_3: float = 1.0,
    ) -> dict:
        from ..lorascripts.toolbox.merge import merge_loras

        inputs = [(_path("loras", lora_1), weight_1), (_path("loras", lora_2), weight_2)]
        if lora_3 != "none":
            inputs.append((_path("loras", lora_3), weight_3))
        target = _output("loras", output_name, [p for p, _ in inputs])
        merge_loras(inputs, target, rank=rank or None)
        return _done(f"wrote {target.name}", target.name)


class ResizeLoRA:
    """SVD rank reduction: a fixed rank, or the rank that keeps a fraction of each update's energy."""

    CATEGORY, FUNCTION, OUTPUT_NODE = TOOLBOX, "resize", True
    RETURN_TYPES, RETURN_NAMES = ("STRING",), ("lora_name",)
    DESCRIPTION = "Smaller LoRA file; the report says how much of each update was kept."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lora_name": _lora_input("The LoRA to shrink."),
                "mode": (
                    ["rank", "energy"],
                    {"tooltip": "rank: fixed rank; energy: keep this fraction per layer."},
                ),
                "rank": ("INT", {"default": 8, "min": 1, "max": 1024, "tooltip": "Target rank (mode rank)."}),
                "energy": (
                    "FLOAT",
                    {
                        "default": 0.95,
                        "min": 0.01,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Fraction kept (mode energy).",
                    },
                ),
                "output_name": (
                    "STRING",
                    {"default": "resized_lora", "tooltip": "File name in models/loras."},
                ),
            }
        }

    def resize(self, lora_name: str, mode: str, rank: int, energy: float, output_name: str) -> dict:
        from ..lorascripts.toolbox.resize import resize_lora

        source = _path("loras", lora_name)
        target = _output("loras", output_name, [source])
        result = resize_lora(
            source, target, rank=rank if mode == "rank" else None, energy=energy if mode == "energy" else None
        )
        ranks = sorted(set(result.ranks.values()))
        text = f"wrote {target.name}: ranks {ranks[0]}..{ranks[-1]}, ≥{result.min_energy:.3f} of each update kept"
        return _done(text, target.name)


class MergeLoRAIntoCheckpoint:
    """Bake a LoRA into a checkpoint (a new file in models/checkpoints that every app loads)."""

    CATEGORY, FUNCTION, OUTPUT_NODE = TOOLBOX, "bake", True
    RETURN_TYPES, RETURN_NAMES = ("STRING",), ("ckpt_name",)
    DESCRIPTION = "Checkpoint + weight·LoRA written as a new single-file .safetensors checkpoint."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "ckpt_name": (
                    _names("checkpoints"),
                    {"tooltip": "Base single-file .safetensors checkpoint."},
                ),
                "lora_name": _lora_input("The LoRA to bake in."),
                "weight": _weight(1.0, "Strength of the LoRA."),
                "output_name": (
                    "STRING",
                    {"default": "merged_checkpoint", "tooltip": "File name in models/checkpoints."},
                ),
            }
        }

    def bake(self, ckpt_name: str, lora_name: str, weight: float, output_name: str) -> dict:
        from ..lorascripts.toolbox.merge import merge_into_checkpoint

        checkpoint, lora = _path("checkpoints", ckpt_name), _path("loras", lora_name)
        target = _output("checkpoints", output_name, [checkpoint])
        counts = merge_into_checkpoint(checkpoint, [(lora, weight)], target)
        text = f"wrote {target.name}: {counts['merged']} layers changed, {counts['skipped']} LoRA modules skipped"
        return _done(text, target.name)
