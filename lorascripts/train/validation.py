"""Validation loss for image training: held-out images, scored the same way at every evaluation.

Every evaluation uses the same latents (cached once, no flips), the same captions (trigger word, no shuffle or
dropout), the same `validation_timesteps` evenly spread over the schedule and the same noise per image and
timestep (drawn from a private generator), as kohya's validation and ai-toolkit's validation loss do; so the
curve moves only when the LoRA does. It runs without gradients, with dropout off, on the unwrapped model (no
collective call, every process computes the same value) and touches no global RNG, so a resumed run still ends
with the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..config import TrainConfig
from ..data.sources import DatasetItem
from ..errors import DatasetError
from .batches import Entry

if TYPE_CHECKING:
    from .run_parts import RunParts

logger = logging.getLogger(__name__)
_NOISE_SEED = 104_729  # validation noise comes from its own seed, apart from every training draw


def split_validation(
    items: list[DatasetItem], cfg: TrainConfig
) -> tuple[list[DatasetItem], list[DatasetItem]]:
    """(training, validation) items: `validation_split` of the images (a fraction or a count), chosen with the
    seed; repeats of a held-out image are never trained on."""
    if not cfg.validation_split:
        return items, []
    split = cfg.validation_split
    count = int(split) if split >= 1 else max(1, round(len(items) * split))
    if count >= len(items):
        raise DatasetError(
            f"validation_split {split} holds out {count} of {len(items)} images, leaving none to train on. "
            "Lower validation_split or add images."
        )
    order = list(range(len(items)))
    random.Random(cfg.seed).shuffle(order)
    held = set(order[:count])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def validation_items(cfg: TrainConfig, train_items: list[DatasetItem]) -> tuple[list, list]:
    """Training and validation items from validation_dir or validation_split (both empty when off)."""
    if cfg.validation_dir:
        from .setup import scan

        if not Path(cfg.validation_dir).is_dir():
            raise DatasetError(
                f"validation_dir {cfg.validation_dir} is not a folder. Point it at a folder of held-out images "
                "with captions, or use validation_split instead."
            )
        found = scan(dataclasses.replace(cfg, train_data_dir=cfg.validation_dir, metadata_path=None)).items
        if not found:
            raise DatasetError(
                f"validation_dir {cfg.validation_dir} has no images. Add some or remove the key."
            )
        return train_items, list(found)
    return split_validation(train_items, cfg)


def expected_share(images: int, timesteps: int, batch: int, every: int) -> float:
    """The share of training time validation takes: images x timesteps forward passes every `every` steps,
    against `every` steps of forward + backward (~3 forward passes) over `batch` images. bench/validation_cost.py
    measures it: 1.5% on the toy model with 4 images, 4 timesteps, batch 4, every 100 steps (model: 1.3%)."""
    validation = images * timesteps
    return validation / (validation + 3 * batch * every)


class Validator:
    """Held-out images with their fixed latents, captions, timesteps and noise; `evaluate()` -> mean loss."""

    def __init__(self, parts: RunParts, items: list[DatasetItem], cache_dir: Path) -> None:
        from .inputs import InputPipeline

        cfg = parts.cfg
        # the same pipeline as training, without anything random: no flips, no shuffle, no dropout
        fixed = dataclasses.replace(
            cfg,
            cache_latents="memory" if cfg.cache_latents == "off" else cfg.cache_latents,
            flip_aug=False,
            shuffle_caption=False,
            caption_dropout_rate=0.0,
            caption_tag_dropout_rate=0.0,
        )
        self.parts = parts
        self.inputs = InputPipeline(
            fixed, items, parts.buckets, parts.vae_identity(), cache_dir, parts.scale_shift
        )
        self.entries = [Entry(i, self.inputs.item_buckets[i]) for i in range(len(items))]
        self.captions = [self.inputs.caption(e, random.Random(0)) for e in self.entries]
        self.timesteps = parts.objective.validation_timesteps(cfg.validation_timesteps)
        self._seed = cfg.seed * 7_919 + _NOISE_SEED

    def prepare(self, vae: torch.nn.Module, show_progress: bool) -> None:
        """Encode the validation latents once (before the VAE may leave the GPU)."""
        self.inputs.prepare(vae, show_progress=show_progress)

    def _noise(self, index: int, shape: tuple[int, ...]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self._seed + index)
        return torch.randn((len(self.timesteps), *shape), generator=generator)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over every validation image and fixed timestep (one batch per image)."""
        p = self.parts
        acc = p.accelerator
        module = acc.unwrap_model(p.module)
        was_training = module.training
        module.eval()  # LoRA dropout off: the same weights give the same loss
        total = 0.0
        try:
            for i, entry in enumerate(self.entries):
                prepared = self.inputs.latents(p.base.vae, [entry], random.Random(0))[0]
                k = len(self.timesteps)
                latents = prepared.latent.unsqueeze(0).expand(k, *prepared.latent.shape).to(acc.device)
                kwargs = p.conditioning([prepared] * k, [self.captions[i]] * k, tuple(latents.shape))
                noise = self._noise(i, tuple(prepared.latent.shape)).to(acc.device)
                with acc.autocast():
                    total += float(module(latents, noise, self.timesteps.to(acc.device), **kwargs))
        finally:
            module.train(was_training)
        return total / max(1, len(self.entries))
