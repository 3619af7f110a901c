"""Measure what a style LoRA learned on the toy model: style scores per strength, with and without trigger."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import TRIGGER
from .grid import GridResult, compose_grid, render_strengths
from .style import style_score

logger = logging.getLogger(__name__)
CONTENT_PROMPTS = (
    "a large red circle in the center, white background",
    "a small blue square on the left, sky background",
    "a large yellow triangle on the right, black background",
)


@dataclass
class StyleReport:
    """Mean style score per strength (with trigger), and how far no-trigger prompts moved from the base."""

    strengths: list[float]
    score_with_trigger: list[float]
    score_without_trigger: list[float]
    drift_without_trigger: (
        float  # mean absolute pixel change (0-1) at strength 1 vs 0, prompts without trigger
    )
    change_with_trigger: float  # the same, prompts with trigger

    def table(self) -> str:
        rows = ["strength | style score (with trigger) | style score (without)"]
        for s, a, b in zip(self.strengths, self.score_with_trigger, self.score_without_trigger):
            rows.append(f"{s:8g} | {a:26.3f} | {b:.3f}")
        rows.append(
            f"pixel change at strength 1: with trigger {self.change_with_trigger:.3f}, "
            f"without {self.drift_without_trigger:.3f}"
        )
        return "\n".join(rows)


def centre_rgb(image: Any) -> np.ndarray:
    """Mean RGB of the centre half of a picture: where a large centred shape of the toy world is."""
    array = np.asarray(image, dtype=np.float32)
    h, w = array.shape[:2]
    return array[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)


# prompts whose centre colour a base toy model must get right (`colour_problems`)
COLOUR_PROMPTS = (
    "a large red circle in the center, white background",
    "a large blue circle in the center, white background",
    "a large yellow square in the center, black background",
)


def colour_problems(images: list[Any]) -> list[str]:
    """What is wrong with the centre colours of `COLOUR_PROMPTS`' pictures ([] when red is red-dominant, blue
    blue-dominant and yellow has red and green well above blue, by 40 of 255)."""
    red, blue, yellow = (centre_rgb(image) for image in images)
    problems = []
    if not red[0] > red[2] + 40:
        problems.append(f"red prompt centre {red}")
    if not blue[2] > blue[0] + 40:
        problems.append(f"blue prompt centre {blue}")
    if not (yellow[0] > yellow[2] + 40 and yellow[1] > yellow[2] + 40):
        problems.append(f"yellow prompt centre {yellow}")
    return problems


def prompts_for(trigger: str = TRIGGER) -> tuple[list[str], list[str]]:
    return [f"{trigger}, {p}" for p in CONTENT_PROMPTS], list(CONTENT_PROMPTS)


def _mean_change(result: GridResult, prompts: list[str], lo: float, hi: float) -> float:
    diffs = [
        np.abs(
            np.asarray(result.images[(p, hi)], dtype=np.float32)
            - np.asarray(result.images[(p, lo)], dtype=np.float32)
        ).mean()
        / 255
        for p in prompts
    ]
    return float(np.mean(diffs))


def evaluate_style(
    base: Any,
    lora_path: Path,
    strengths: tuple[float, ...] = (0.0, 0.5, 1.0),
    seed: int = 1234,
    steps: int = 25,
    size: int | None = None,
) -> tuple[StyleReport, GridResult]:
    """Style scores of the toy prompts with and without the trigger at each LoRA strength (`size`: the image side,
    default the model's resolution)."""
    with_trigger, without = prompts_for()
    result = render_strengths(
        base, lora_path, with_trigger + without, list(strengths), seed=seed, steps=steps, size=size
    )

    def mean_score(prompts: list[str], s: float) -> float:
        return float(np.mean([style_score(result.images[(p, s)]) for p in prompts]))

    report = StyleReport(
        strengths=list(strengths),
        score_with_trigger=[mean_score(with_trigger, s) for s in strengths],
        score_without_trigger=[mean_score(without, s) for s in strengths],
        drift_without_trigger=_mean_change(result, without, strengths[0], strengths[-1]),
        change_with_trigger=_mean_change(result, with_trigger, strengths[0], strengths[-1]),
    )
    return report, result


def write_report(report: StyleReport, result: GridResult, out_dir: Path) -> Path:
    """grid.png (rows: prompts with/without trigger; columns: strengths) and style_scores.json."""
    grid_path = out_dir / "grid.png"
    compose_grid(result).save(grid_path)
    (out_dir / "style_scores.json").write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    return grid_path
