"""Captions from vision-language models, transformers-native: Qwen2-VL / Qwen2.5-VL / Qwen3-VL and JoyCaption
(LLaVA), through `AutoModelForImageTextToText` + `AutoProcessor` and the model's own chat template.

One class serves every family: the prompt is rendered by the processor's chat template (the HF-standard
`{"type": "image"}` content; a template that only reads plain-text content, as JoyCaption's does, gets the
processor's image token in front of the prompt), the batch is left-padded, only the new tokens are decoded,
and the text is tidied (hedging opener, repeated sentences, a sentence cut by the token limit).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from PIL import Image

from ..errors import ConfigError
from .loading import ModelSource, load_pretrained
from .postprocess import tidy_sentences
from .prompts import PRESETS, SYSTEM_PROMPT

logger = logging.getLogger(__name__)


class VLMCaptioner:
    """A chat vision-language model prompted with a preset (or your own prompt) per image."""

    def __init__(
        self,
        source: ModelSource,
        *,
        name: str = "qwen-vl",
        preset: str = "long",
        prompt: str = "",
        max_new_tokens: int = 160,
        load_in_4bit: bool = False,
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if preset not in PRESETS:
            raise ConfigError(f"unknown caption preset {preset!r}; choose {', '.join(PRESETS)}.")
        device = source.device
        self.processor, self.model = load_pretrained(
            source,
            (AutoProcessor, AutoModelForImageTextToText),
            what="vision-language model",
            hint=_load_hint(),
            errors=(OSError, ValueError, TypeError, ImportError, AttributeError),
            **_weights_kwargs(device, load_in_4bit),
        )
        if not load_in_4bit or device != "cuda":
            self.model.to(device)
        self.model.eval()
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        self.name, self.device, self.batch_size = name, device, source.batch_size
        self.preset, self.max_new_tokens = preset, max_new_tokens
        self.text = chat_text(self.processor, prompt or PRESETS[preset])

    def caption(self, images: list[Image.Image]) -> list[str]:
        inputs = self.processor(
            text=[self.text] * len(images), images=images, return_tensors="pt", padding=True
        ).to(self.device)
        dtype = next(self.model.parameters()).dtype
        if "pixel_values" in inputs and dtype.is_floating_point:
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        eos = _eos_ids(self.model)
        captions = []
        for row, text in zip(new, self.processor.batch_decode(new, skip_special_tokens=True)):
            cut = not any(int(t) in eos for t in row)  # no end token: the limit stopped it mid-sentence
            captions.append(tidy_sentences(text, tags=self.preset == "tags", cut=cut))
        return captions


def _load_hint() -> str:
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:  # transformers' Qwen-VL video processors import it
        return "Qwen-VL processors need torchvision: install the torchvision build that matches your torch."
    return "Give a transformers-native Qwen-VL or LLaVA (JoyCaption) folder or Hub id."


def _weights_kwargs(device: str, load_in_4bit: bool) -> dict[str, Any]:
    """bf16 on a GPU, fp32 on the CPU (fp16/bf16 matmuls there are emulated or slow); 4-bit when asked and
    bitsandbytes is present on CUDA."""
    if device != "cuda":
        if load_in_4bit:
            logger.warning("4-bit loading needs CUDA; loading the captioner in fp32 on %s", device)
        return {"dtype": torch.float32}
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if not load_in_4bit:
        return {"dtype": dtype}
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        logger.warning("bitsandbytes is not installed: loading the captioner in %s instead of 4 bit", dtype)
        return {"dtype": dtype}
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")
    return {"dtype": dtype, "quantization_config": quant, "device_map": {"": 0}}


def _eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def chat_text(processor: Any, prompt: str) -> str:
    """The generation prompt as the model's chat template writes it, with exactly one image placeholder."""
    token = getattr(processor, "image_token", None) or "<image>"
    system = {"role": "system", "content": SYSTEM_PROMPT}
    content = [{"type": "image"}, {"type": "text", "text": prompt}]
    try:
        text = processor.apply_chat_template(
            [system, {"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
    except Exception:  # noqa: BLE001 - a template that reads only text content fails on lists; handled below
        text = ""
    if token in text:
        return text
    plain = processor.apply_chat_template(
        [system, {"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    if token in plain:  # the template places the image itself (JoyCaption's)
        return plain
    return processor.apply_chat_template(
        [system, {"role": "user", "content": f"{token}\n{prompt}"}],
        add_generation_prompt=True,
        tokenize=False,
    )
