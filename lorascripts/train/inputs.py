"""Turn scanned dataset items into model inputs: bucketed pixels -> VAE latents (cached), captions, size ids.

Latent caches are keyed by image content + VAE identity + bucket size, so a second run and incremental
training reuse them (disk), or a run reuses them across epochs (memory).
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.buckets import BucketSet
from ..data.caption_proc import process_caption
from ..data.images import image_size, load_image
from ..data.transforms import image_to_tensor
from ..fileio import atomic_write_bytes, clean_partial_files, file_sha256
from .batches import Entry, expand_repeats

logger = logging.getLogger(__name__)
STALE_PARTIAL_S = 3600.0  # a younger partial file in a shared cache_dir is another run's write in progress


@dataclass(frozen=True)
class Prepared:
    """One image ready for training: its latent and its size and crop (for families that condition on them)."""

    latent: torch.Tensor
    original_size: tuple[int, int]  # (height, width)
    crop_top_left: tuple[int, int]


class FixedSize:
    """Bucketing switched off: every image is resized and centre-cropped to the one training size."""

    def __init__(self, buckets: BucketSet, size: tuple[int, int]) -> None:
        self._buckets = buckets
        self.size = size

    def assign(self, width: int, height: int) -> tuple[int, int]:
        return self.size

    def resize_and_crop(self, image, size, rng):  # noqa: ANN001 - same signature as BucketSet
        return self._buckets.resize_and_crop(image, size, rng)


class TextCache:
    """Text-encoder outputs per processed caption: in memory, and also on disk when `folder` is given.

    Disk entries are keyed by caption + model identity + clip skip, so another run (another output folder
    with the same cache_dir) reuses them as it reuses latents.
    """

    def __init__(self, folder: Path | None, identity: str, clip_skip: int) -> None:
        self.folder = folder
        if folder is not None:
            clean_partial_files(folder, older_than_s=STALE_PARTIAL_S)  # writes of killed runs
        self.identity = f"{identity}|clip_skip={clip_skip}"
        self._memory: dict[str, dict[str, torch.Tensor]] = {}
        self.disk_hits = 0

    def _path(self, caption: str) -> Path:
        key = hashlib.sha256(f"{self.identity}|{caption}".encode()).hexdigest()[:40]
        return self.folder / f"{key}.safetensors"  # type: ignore[operator]

    def get(self, caption: str) -> dict[str, torch.Tensor] | None:
        found = self._memory.get(caption)
        if found is None and self.folder is not None and self._path(caption).exists():
            found = self._memory[caption] = load_file(str(self._path(caption)))
            self.disk_hits += 1
        return found

    def put(self, caption: str, outputs: dict[str, torch.Tensor]) -> None:
        """Store one caption's encoder outputs (the family's names, e.g. hidden / pooled)."""
        self._memory[caption] = outputs
        if self.folder is None:
            return
        tensors = {k: v.detach().cpu().contiguous() for k, v in outputs.items()}
        atomic_write_bytes(self._path(caption), save(tensors))  # a unique temporary name: runs share caches


class InputPipeline:
    """Buckets, latent cache and caption processing for one training run."""

    def __init__(
        self,
        cfg: TrainConfig,
        items: list,
        buckets: BucketSet,
        vae_identity: str,
        cache_dir: Path,
        scale_shift: tuple[float, float],
    ) -> None:
        self.cfg = cfg
        self.items = items
        self.buckets = buckets
        self.vae_identity = vae_identity
        self.scale_shift = scale_shift  # the family's latent normalisation: (encoded - shift) * scale
        self.cache_dir = cache_dir
        self.background = tuple(cfg.background_color[:3])
        self.sizes = [image_size(item.path) for item in items]
        self.item_buckets = [buckets.assign(w, h) for (w, h) in self.sizes]
        self._memory: dict[int, Prepared] = {}

    def entries(self) -> list[Entry]:
        """Every training example (repeats expanded) with its bucket."""
        return [Entry(i, self.item_buckets[i]) for i in expand_repeats([it.repeats for it in self.items])]

    def bucket_counts(self) -> dict[tuple[int, int], int]:
        counts: dict[tuple[int, int], int] = {}
        for entry in self.entries():
            counts[entry.bucket] = counts.get(entry.bucket, 0) + 1
        return counts

    # --- latents ---------------------------------------------------------------------------------------------------
    def _pixels(self, index: int, flip: bool) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        image = load_image(self.items[index].path, background=self.background)
        image, crop_tl, original = self.buckets.resize_and_crop(image, self.item_buckets[index], None)
        if flip:
            image = image.transpose(0)  # PIL.Image.FLIP_LEFT_RIGHT
        # resize_and_crop reports sizes as (w, h); SDXL conditioning wants (h, w) / (top, left)
        return image_to_tensor(image), (original[1], original[0]), (crop_tl[1], crop_tl[0])

    def _cache_key(self, index: int) -> str:
        bw, bh = self.item_buckets[index]
        raw = f"{file_sha256(self.items[index].path)}|{self.vae_identity}|{bw}x{bh}|{self.background}"
        return hashlib.sha256(raw.encode()).hexdigest()[:40]

    def _encode(self, vae: torch.nn.Module, index: int, flip: bool = False) -> Prepared:
        pixels, original, crop = self._pixels(index, flip)
        param = next(vae.parameters())
        with torch.no_grad():
            dist = vae.encode(pixels.unsqueeze(0).to(param.device, param.dtype)).latent_dist
            generator = torch.Generator().manual_seed(self.cfg.seed + index)
            noise = torch.randn(dist.mean.shape, generator=generator).to(dist.mean.device, dist.mean.dtype)
            scale, shift = self.scale_shift
            latent = (dist.mean + dist.std * noise - shift) * scale
        return Prepared(latent[0].float().cpu().contiguous(), original, crop)

    def prepare(self, vae: torch.nn.Module, show_progress: bool = True) -> None:
        """Fill the latent cache (memory or disk) for every image, once, before training starts."""
        if self.cfg.cache_latents == "off":
            return
        disk = self.cfg.cache_latents == "disk"
        folder = self.cache_dir / "latents"
        if disk:
            clean_partial_files(folder, older_than_s=STALE_PARTIAL_S)  # writes of killed runs
        hits = 0
        for index in tqdm(
            range(len(self.items)), desc="caching latents", disable=not show_progress, leave=False
        ):
            path = folder / f"{self._cache_key(index)}.safetensors" if disk else None
            if path is not None and path.exists():
                data = load_file(str(path))
                self._memory[index] = Prepared(
                    data["latent"],
                    tuple(data["original_size"].tolist()),
                    tuple(data["crop_top_left"].tolist()),
                )
                hits += 1
                continue
            prepared = self._encode(vae, index)
            self._memory[index] = prepared
            if path is not None:
                tensors = {
                    "latent": prepared.latent.contiguous(),
                    "original_size": torch.tensor(prepared.original_size),
                    "crop_top_left": torch.tensor(prepared.crop_top_left),
                }
                atomic_write_bytes(path, save(tensors))  # a unique temporary name: runs share caches
        if disk:
            logger.info("latent cache: %d of %d images reused from %s", hits, len(self.items), folder)

    def latents(self, vae: torch.nn.Module, entries: list[Entry], rng: random.Random) -> list[Prepared]:
        """Latents of a batch: from the cache, or encoded now (with random flips when flip_aug is on)."""
        out = []
        for entry in entries:
            cached = self._memory.get(entry.item)
            if cached is None:
                flip = self.cfg.flip_aug and rng.random() < 0.5
                cached = self._encode(vae, entry.item, flip)
            out.append(cached)
        return out

    def caption(self, entry: Entry, rng: random.Random) -> str:
        """The caption of an example after trigger word, shuffling and dropout."""
        cfg = self.cfg
        return process_caption(
            self.items[entry.item].caption,
            trigger_word=cfg.trigger_word,
            shuffle=cfg.shuffle_caption,
            keep_tokens=cfg.keep_tokens,
            caption_dropout_rate=cfg.caption_dropout_rate,
            tag_dropout_rate=cfg.caption_tag_dropout_rate,
            rng=rng,
        )
