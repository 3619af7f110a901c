"""LoadLoRA (with a visible report of keys that did not apply) and WebUI-style `<lora:name:w>` prompt tags."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from comfy_api.latest import io

from .paths import named_output, node_schema

logger = logging.getLogger(__name__)


def _lora_names() -> list[str]:
    import folder_paths

    return folder_paths.get_filename_list("loras")


def _resolve(name: str) -> str:
    import folder_paths

    return folder_paths.get_full_path_or_raise("loras", name)


def apply_lora(
    model: Any, clip: Any, path: str, strength_model: float, strength_clip: float
) -> tuple[Any, Any, list[str]]:
    """Apply with ComfyUI's own loader; return the keys it could not place (ComfyUI only logs them)."""
    import comfy.sd
    import comfy.utils

    from ..lorascripts.toolbox.selftest import comfyui_unapplied

    lora = comfy.utils.load_torch_file(path, safe_load=True)
    unapplied = comfyui_unapplied(lora, model, clip)
    new_model, new_clip = comfy.sd.load_lora_for_models(model, clip, lora, strength_model, strength_clip)
    return new_model, new_clip, unapplied


def _report(name: str, unapplied: list[str]) -> str:
    if not unapplied:
        return f"{name}: every key applied"
    return f"WARNING {name}: {len(unapplied)} keys did not apply (e.g. {', '.join(unapplied[:3])})"


def _model_and_clip(clip_optional: bool = False) -> list[io.Input]:
    clip_tip = "The text encoder." + (
        " Optional: without it only the model is patched." if clip_optional else ""
    )
    return [
        io.Model.Input("model", tooltip="The diffusion model."),
        io.Clip.Input("clip", tooltip=clip_tip, optional=clip_optional),
    ]


def _strength(name: str, tooltip: str) -> io.Input:
    return io.Float.Input(name, default=1.0, min=-10.0, max=10.0, step=0.05, tooltip=tooltip)


class LoadLoRA(io.ComfyNode):
    """Apply a LoRA to MODEL (and CLIP when given) at the given strengths."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            "LoadLoRA",
            "Load LoRA",
            inputs=[
                *_model_and_clip(
                    clip_optional=True
                ),  # diffusion-transformer LoRAs often patch the model only
                io.Combo.Input("lora_name", options=_lora_names(), tooltip="A LoRA from models/loras."),
                _strength("strength_model", "U-Net strength."),
                _strength("strength_clip", "Text-encoder strength."),
                io.String.Input(
                    "trained_lora",
                    optional=True,
                    force_input=True,
                    tooltip="lora_name output of Train LoRA (wins over the list).",
                ),
            ],
            outputs=[
                named_output(io.Model, "model"),
                named_output(io.Clip, "clip"),
                named_output(io.String, "report"),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, lora_name: str = "", **_: Any) -> bool:
        return True  # a freshly trained LoRA is not in the list the graph was validated against

    @classmethod
    def execute(
        cls,
        model: Any,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
        clip: Any = None,
        trained_lora: str | None = None,
    ) -> io.NodeOutput:
        name = trained_lora or lora_name
        model, clip, unapplied = apply_lora(model, clip, _resolve(name), strength_model, strength_clip)
        report = _report(name, unapplied)
        if unapplied:
            logger.warning("%s", report)
        return io.NodeOutput(model, clip, report, ui={"text": [report]})


class LoraPromptTags(io.ComfyNode):
    """Apply `<lora:name:0.7>` / `<lora:name:te:unet>` tags from a prompt (the WebUI syntax); return the clean prompt."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            "PromptTags",
            "LoRA Prompt Tags",
            inputs=[
                *_model_and_clip(),
                io.String.Input(
                    "text",
                    multiline=True,
                    default="a photo <lora:my_lora:0.7>",
                    tooltip="Prompt with <lora:name:weight> or <lora:name:te_weight:unet_weight> tags.",
                ),
            ],
            outputs=[
                named_output(io.Model, "model"),
                named_output(io.Clip, "clip"),
                named_output(io.String, "prompt"),
                named_output(io.String, "report"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model: Any, clip: Any, text: str) -> io.NodeOutput:
        from ..lorascripts.host.prompt_tags import parse_prompt_tags

        prompt, tags = parse_prompt_tags(text)
        names = {Path(n).stem: n for n in _lora_names()}
        lines = []
        for tag in tags:
            if tag.name not in names:
                raise ValueError(
                    f"<lora:{tag.name}> names no file in models/loras (have: {', '.join(sorted(names)) or 'none'})."
                )
            model, clip, unapplied = apply_lora(model, clip, _resolve(names[tag.name]), tag.unet, tag.te)
            lines.append(_report(tag.name, unapplied))
        report = "\n".join(lines) or "no <lora:...> tags"
        return io.NodeOutput(model, clip, prompt, report, ui={"text": [report]})
