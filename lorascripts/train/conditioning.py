"""What the denoiser is conditioned on, per batch: text (cached encoder outputs or token ids) and image ids.

The family encodes; this module decides when: with `cache_text_encoder_outputs` the outputs of each processed
caption are computed once (borrowing the encoders back onto the device if they were released) and reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from .inputs import TextCache
from .placement import EncoderPlacement, text_encoder_names


class Conditioner:
    """Keyword inputs of the training module besides latents, noise and timesteps."""

    def __init__(
        self,
        cfg: TrainConfig,
        base: Any,
        placement: EncoderPlacement,
        device: torch.device,
        identity: str,
        cache_dir: Path,
    ) -> None:
        self.cfg, self.base, self.placement, self.device = cfg, base, placement, device
        disk = cache_dir / "text" if cfg.cache_text_encoder_outputs == "disk" else None
        self._cache = TextCache(disk, identity, cfg.clip_skip)

    def __call__(self, prepared: list, captions: list[str], shape: tuple[int, ...]) -> dict[str, Any]:
        kwargs = self.text(captions)
        image = self.base.family.image_conditioning(self.base, prepared, shape)
        if image:
            kwargs["image"] = {k: v.to(self.device) for k, v in image.items()}
        return kwargs

    def text(self, captions: list[str]) -> dict[str, Any]:
        """Token ids for the text encoders, or cached encoder outputs when the encoders are frozen and cached."""
        family = self.base.family
        if self.cfg.cache_text_encoder_outputs == "off":
            return {"input_ids": [ids.to(self.device) for ids in family.tokenize(self.base, captions)]}
        missing = [c for c in dict.fromkeys(captions) if self._cache.get(c) is None]
        if missing:
            ids = [i.to(self.device) for i in family.tokenize(self.base, missing)]
            with torch.no_grad(), self.placement.borrowed(*text_encoder_names(len(self.base.text_encoders))):
                outputs = family.encode_tokens(self.base, ids, clip_skip=self.cfg.clip_skip)
            for i, caption in enumerate(missing):
                self._cache.put(caption, {k: v[i] for k, v in outputs.items()})
        found = [self._cache.get(c) for c in captions]
        return {"cached": {k: torch.stack([f[k] for f in found]).to(self.device) for k in found[0]}}
