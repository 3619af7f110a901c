"""Where the frozen parts of the base model live while the caches fill and once their outputs are cached.

With the latent cache and the text-encoder output cache full, a step uses only the denoiser: on a GPU the VAE and
the text encoders then only hold memory (SDXL's two encoders are 1.6 GB in bf16, FLUX.1's T5-XXL 8.9 GiB).
The run (train/run_setup.py) places the frozen parts one after the other, as kohya's trainers do: the VAE while
the latents are cached, then the text encoders while the captions are, each released to the CPU once its
outputs are all cached, and only then the denoiser (its non-swapped blocks), so the caching never holds the
denoiser beside T5. Released parts come back for as long as something needs them again (samples, a caption the
cache has not seen). On a CPU there is nothing to free (`auto` leaves it off there; `on` runs the same
bookkeeping, which is how the CPU tests exercise it). `EncoderPlacement.timeline` records every placement,
release and cache filled, with the parts on the device after each: the order the tests check.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..config import TrainConfig

logger = logging.getLogger(__name__)


def captions_are_fixed(cfg: TrainConfig) -> bool:
    """True when every example always gets the same caption (no shuffling or dropout draws a new one)."""
    return not (cfg.shuffle_caption or cfg.caption_dropout_rate or cfg.caption_tag_dropout_rate)


def released_parts(cfg: TrainConfig, *, device_type: str, processes: int, text_cached: bool) -> set[str]:
    """What `offload_encoders` takes off the device: "vae" once the latents are cached, "text" once every
    caption's encoder output is (fixed captions, one process: DDP wraps the encoders with the U-Net and
    broadcasts their buffers from the device every step). The trainer and the estimate both ask here."""
    setting = cfg.offload_encoders
    if setting == "off" or (setting == "auto" and device_type == "cpu"):
        return set()
    parts = {"vae"} if cfg.cache_latents != "off" else set()
    if text_cached and captions_are_fixed(cfg) and processes == 1:
        parts.add("text")
    return parts


def text_encoder_names(count: int) -> list[str]:
    return [f"text encoder {i + 1}" for i in range(count)]


@dataclass(frozen=True)
class Moment:
    """One entry of `EncoderPlacement.timeline`: what happened, and the frozen parts on the device after it."""

    event: str
    on_device: frozenset[str]


class EncoderPlacement:
    """Records where the frozen parts are; moves released ones to the CPU, and back to the training device while
    they are borrowed."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.released: dict[str, torch.nn.Module] = {}
        self.on_device: set[str] = set()  # bookkeeping: on a CPU a module's `.device` cannot tell
        self.timeline: list[Moment] = []

    def note(self, event: str) -> None:
        """Add `event` (e.g. "latents cached") to the timeline with the parts on the device now."""
        self.timeline.append(Moment(event, frozenset(self.on_device)))

    def placed(self, name: str) -> None:
        """Record that the run moved the frozen part `name` to the training device."""
        self.on_device.add(name)
        self.note(f"placed {name}")

    def release(self, name: str, module: torch.nn.Module) -> None:
        """Move one idle module off the accelerator."""
        if name in self.released:
            return
        size = (
            sum(p.numel() * p.element_size() for p in module.parameters()) if self.device.type != "cpu" else 0
        )
        module.to("cpu")
        self.released[name] = module
        self.on_device.discard(name)
        self.note(f"released {name}")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        logger.info(
            "%s released to the CPU while its outputs are cached (%.2f GiB of %s memory freed)",
            name,
            size / 2**30,
            self.device.type,
        )

    @contextlib.contextmanager
    def borrowed(self, *names: str) -> Iterator[None]:
        """Bring released modules (all, or those named) back for the block (samples, an uncached caption)."""
        chosen = {n: m for n, m in self.released.items() if not names or n in names}
        for module in chosen.values():
            module.to(self.device)
        self.on_device.update(chosen)
        if chosen:
            self.note(f"borrowed {', '.join(chosen)}")
        try:
            yield
        finally:
            for module in chosen.values():
                module.to("cpu")
            self.on_device.difference_update(chosen)
            if chosen:
                self.note(f"returned {', '.join(chosen)}")
            if chosen and self.device.type == "cuda":
                torch.cuda.empty_cache()
