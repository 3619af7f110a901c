"""LoadLoRA (with a visible report of keys that did not apply) and WebUI-style `<lora:name:w>` prompt tags."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .paths import CATEGORY

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


MODEL_AND_CLIP = {
    "model": ("MODEL", {"tooltip": "The diffusion model."}),
    "clip": ("CLIP", {"tooltip": "The text encoder."}),
}


class LoadLoRA:
    """Apply a LoRA to MODEL and CLIP at the given strengths."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("model", "clip", "report")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                **MODEL_AND_CLIP,
                "lora_name": (_lora_names(), {"tooltip": "A LoRA from models/loras."}),
                "strength_model": (
                    "FLOAT",
                    {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05, "tooltip": "U-Net strength."},
                ),
                "strength_clip": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -10.0,
                        "max": 10.0,
                        "step": 0.05,
                        "tooltip": "Text-encoder strength.",
                    },
                ),
            },
            "optional": {
                "trained_lora": (
                    "STRING",
                    {"forceInput": True, "tooltip": "lora_name output of Train LoRA (wins over the list)."},
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name: str = "", **_: Any) -> bool:
        return True  # a freshly trained LoRA is not in the list the graph was validated against

    def load(
        self,
        model: Any,
        clip: Any,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
        trained_lora: str | None = None,
    ) -> dict:
        name = trained_lora or lora_name
        model, clip, unapplied = apply_lora(model, clip, _resolve(name), strength_model, strength_clip)
        report = _report(name, unapplied)
        if unapplied:
            logger.warning("%s", report)
        return {"ui": {"text": [report]}, "result": (model, clip, report)}


class LoraPromptTags:
    """Apply `<lora:name:0.7>` / `<lora:name:te:unet>` tags from a prompt (the WebUI syntax); return the clean prompt."""

    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "CLIP", "STRING", "STRING")
    RETURN_NAMES = ("model", "clip", "prompt", "report")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                **MODEL_AND_CLIP,
                "text": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "a photo <lora:my_lora:0.7>",
                        "tooltip": "Prompt with "
                        "<lora:name:weight> or <lora:name:te_weight:unet_weight> tags.",
                    },
                ),
            }
        }

    def apply(self, model: Any, clip: Any, text: str) -> dict:
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
        return {"ui": {"text": [report]}, "result": (model, clip, prompt, report)}
