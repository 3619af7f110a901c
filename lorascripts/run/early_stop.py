"""The one "is it still getting better?" rule both trainers use: best evaluation so far, evaluations without
improvement, and when patience runs out.

The image trainer (validation loss) and the text trainer (eval loss) feed it one value per evaluation; what
each does with an improvement (write the best LoRA / adapter) stays in the trainer. Its state travels in the
checkpoint's `extra` JSON so that `resume: auto` continues the count where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# An evaluation must beat the best by more than this to count: float noise is not an improvement.
MIN_DELTA = 1e-6


@dataclass(frozen=True)
class Verdict:
    """What one evaluation means: a new best, and whether training should stop now."""

    improved: bool
    stop: bool


@dataclass
class BestTracker:
    """Lowest value seen (and its step) and the evaluations since; `patience` 0 never stops."""

    patience: int = 0
    best: tuple[float, int] | None = None
    bad_evals: int = 0

    def update(self, value: float, step: int) -> Verdict:
        """Record the evaluation of `step`; a non-finite value is never an improvement."""
        if value == value and (
            self.best is None or value < self.best[0] - MIN_DELTA
        ):  # value == value: not NaN
            self.best, self.bad_evals = (float(value), int(step)), 0
            return Verdict(improved=True, stop=False)
        self.bad_evals += 1
        return Verdict(improved=False, stop=bool(self.patience) and self.bad_evals >= self.patience)

    def state(self) -> dict[str, Any]:
        """JSON-able state for a checkpoint's `extra`."""
        return {"best": list(self.best) if self.best else None, "bad_evals": self.bad_evals}

    def restore(self, extra: dict[str, Any]) -> None:
        """Continue from a checkpoint's `extra` (missing keys: a checkpoint made without evaluation)."""
        best = extra.get("best")
        self.best = (float(best[0]), int(best[1])) if best else None
        self.bad_evals = int(extra.get("bad_evals", 0))
