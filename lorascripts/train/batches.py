"""Deterministic, resumable batching over bucketed images.

Each epoch's batch order is a pure function of (seed, epoch), so a resumed run picks up at exactly the same
batch (`Progress.position`) and sees the same data as an uninterrupted one. Every batch holds images of one
bucket size; with several processes each global batch is split evenly between them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One training example: an image index (into the scanned items) and its bucket size."""

    item: int
    bucket: tuple[int, int]


def expand_repeats(repeats: list[int]) -> list[int]:
    """Item indices, each repeated as its kohya repeat folder says."""
    return [i for i, n in enumerate(repeats) for _ in range(max(1, n))]


def epoch_batches(
    entries: list[Entry], batch_size: int, seed: int, epoch: int, *, world_size: int = 1
) -> list[list[Entry]]:
    """Global batches of one epoch: shuffled within buckets, then batch order shuffled; same bucket per batch.

    A global batch has `batch_size * world_size` entries when the bucket has enough; the last partial batch of
    a bucket is kept (never drop a user's images), and split across processes as evenly as possible.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    by_bucket: dict[tuple[int, int], list[Entry]] = {}
    for entry in entries:
        by_bucket.setdefault(entry.bucket, []).append(entry)
    global_size = batch_size * world_size
    batches: list[list[Entry]] = []
    for bucket in sorted(by_bucket):
        group = by_bucket[bucket]
        rng.shuffle(group)
        batches += [group[i : i + global_size] for i in range(0, len(group), global_size)]
    rng.shuffle(batches)
    return batches


def shard(batch: list[Entry], rank: int, world_size: int) -> list[Entry]:
    """This process's part of a global batch (round-robin, so every process gets at least one when possible)."""
    part = batch[rank::world_size]
    return part if part else batch[:1]


def steps_per_epoch(n_batches: int, accumulation: int) -> int:
    """Optimizer steps per epoch (a partial accumulation window at the end still steps)."""
    return max(1, -(-n_batches // accumulation))
