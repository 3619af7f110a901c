"""Which examples train and which are held out for eval loss: `eval_data` when given, else a seeded
`eval_split` fraction of `train_data` (only with 10 examples or more)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def train_and_held_out(cfg: Any, read: Callable[[Path, str], list[T]]) -> tuple[list[T], list[T]]:
    """(training examples, held-out examples), read with `read(path, on_bad_line)`."""
    examples = read(Path(cfg.train_data), cfg.on_bad_line)
    held = read(Path(cfg.eval_data), cfg.on_bad_line) if cfg.eval_data else []
    if not held and cfg.eval_split > 0 and len(examples) >= 10:
        shuffled = examples[:]
        random.Random(cfg.seed).shuffle(shuffled)
        cut = max(1, int(len(shuffled) * cfg.eval_split))
        held, examples = shuffled[:cut], shuffled[cut:]
    return examples, held
