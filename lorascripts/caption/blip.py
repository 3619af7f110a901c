"""BLIP image captioning (natural language), through transformers' native BLIP classes."""

from __future__ import annotations

import logging

import torch
from PIL import Image

from .loading import ModelSource, load_pretrained

logger = logging.getLogger(__name__)


class BlipCaptioner:
    """`Salesforce/blip-image-captioning-large` (or any BLIP captioning checkpoint)."""

    name = "blip"

    def __init__(
        self,
        source: ModelSource,
        *,
        max_new_tokens: int = 40,
        num_beams: int = 3,
        prompt: str = "",
    ) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        classes = (BlipProcessor, BlipForConditionalGeneration)
        self.processor, loaded = load_pretrained(source, classes, what="BLIP model")
        self.model = loaded.to(source.device).eval()
        self.device, self.batch_size = source.device, source.batch_size
        self.max_new_tokens, self.num_beams, self.prompt = max_new_tokens, num_beams, prompt

    def caption(self, images: list[Image.Image]) -> list[str]:
        texts = [self.prompt] * len(images) if self.prompt else None
        inputs = self.processor(images=images, text=texts, return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
        captions = self.processor.batch_decode(out, skip_special_tokens=True)
        return [c.strip() for c in captions]
