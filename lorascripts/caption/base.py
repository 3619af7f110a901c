"""The captioner interface and the registry that picks one by name (`blip`, `florence2`, `wd14`, and the
vision-language models `qwen-vl` and `joycaption`).

The captioners are imported only when picked (each pulls in transformers or onnxruntime); they import
`loading.py`, never this module, so the imports go one way."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from PIL import Image

from ..errors import ConfigError
from .loading import ModelSource, check_native, resolve_device

logger = logging.getLogger(__name__)

DEFAULT_MODELS = {
    "blip": "Salesforce/blip-image-captioning-large",
    # a transformers-native conversion; the original microsoft/Florence-2-* repos need remote code
    "florence2": "florence-community/Florence-2-large",
    "wd14": "SmilingWolf/wd-vit-tagger-v3",
    # vision-language models, transformers-native (no remote code): any Qwen2-VL / Qwen2.5-VL / Qwen3-VL chat model
    "qwen-vl": "Qwen/Qwen2.5-VL-3B-Instruct",
    # JoyCaption's LLaVA conversion (SigLIP + Llama 3.1)
    "joycaption": "fancyfeast/llama-joycaption-beta-one-hf-llava",
}
VLM_CAPTIONERS = ("qwen-vl", "joycaption")


class Captioner(Protocol):
    """Turns a batch of RGB images into one caption each."""

    name: str
    batch_size: int

    def caption(self, images: list[Image.Image]) -> list[str]: ...


def create_captioner(
    name: str,
    model: str | None = None,
    *,
    device: str = "auto",
    batch_size: int = 4,
    allow_remote_code: bool = False,
    preset: str | None = None,
    **options: Any,
) -> Captioner:
    """A captioner by name; `model` is a Hugging Face id or a local folder (defaults per captioner).

    `preset` (prompts.PRESETS) is what the vision-language captioners are asked; the others ignore it, so a
    host form can pass its one preset choice whatever captioner is picked."""
    if name not in DEFAULT_MODELS:
        raise ConfigError(f"unknown captioner {name!r}; choose {', '.join(DEFAULT_MODELS)}.")
    model = model or DEFAULT_MODELS[name]
    if name != "wd14":  # an ONNX graph runs no Python of its own
        check_native(model, allow_remote_code)  # before importing transformers: a wrong path fails in no time
    source = ModelSource(model, resolve_device(device), batch_size, allow_remote_code)
    if name == "blip":
        from .blip import BlipCaptioner

        return BlipCaptioner(source, **options)
    if name == "florence2":
        from .florence import FlorenceCaptioner

        return FlorenceCaptioner(source, **options)
    if name == "wd14":
        from .wd14 import WD14Tagger

        return WD14Tagger(source, **options)
    from .vlm import VLMCaptioner

    if preset:
        options["preset"] = preset
    return VLMCaptioner(source, name=name, **options)
