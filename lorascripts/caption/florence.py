"""Florence-2 captions (`<CAPTION>`, `<DETAILED_CAPTION>`, `<MORE_DETAILED_CAPTION>`), transformers-native."""

from __future__ import annotations

import torch
from PIL import Image

from ..errors import ConfigError
from .loading import ModelSource, load_pretrained

TASKS = {"caption": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "more_detailed": "<MORE_DETAILED_CAPTION>"}


class FlorenceCaptioner:
    """Florence-2 through `Florence2ForConditionalGeneration` (no remote code)."""

    name = "florence2"

    def __init__(
        self,
        source: ModelSource,
        *,
        task: str = "detailed",
        max_new_tokens: int = 128,
        num_beams: int = 3,
    ) -> None:
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        if task not in TASKS:
            raise ConfigError(f"unknown Florence-2 task {task!r}; choose {', '.join(TASKS)}.")
        hint = "Use a transformers-native conversion such as florence-community/Florence-2-large."
        classes = (AutoProcessor, Florence2ForConditionalGeneration)
        self.processor, loaded = load_pretrained(source, classes, what="Florence-2 model", hint=hint)
        self.model = loaded.to(source.device).eval()
        self.device, self.batch_size = source.device, source.batch_size
        self.prompt, self.max_new_tokens, self.num_beams = TASKS[task], max_new_tokens, num_beams

    def caption(self, images: list[Image.Image]) -> list[str]:
        inputs = self.processor(images=images, text=[self.prompt] * len(images), return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [t.replace(self.prompt, "").strip() for t in texts]
