"""Helpers for the training tests: tiny datasets on disk and config dicts for the tiny models."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")


def make_dataset(folder: Path, n: int = 6, size: int = 32, seed: int = 0, *, metadata: bool = True) -> Path:
    """`n` small images of coloured shapes with captions in metadata.csv (or .txt sidecars)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        image = Image.new("RGB", (size, size), (250, 250, 245))
        draw = ImageDraw.Draw(image)
        box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        name = f"img_{i:02d}.png"
        image.save(folder / name)
        caption = f"a {colour} {shape}"
        rows.append((name, caption))
        if not metadata:
            (folder / f"img_{i:02d}.txt").write_text(caption, encoding="utf-8")
    if metadata:
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file_name", "caption"])
            writer.writerows(rows)
    return folder


def tiny_config(model: Any, data: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    """A fast config for a tiny fixture model (single-file loading path)."""
    cfg = {
        "base_model": str(model.single_file),
        "tokenizer_path": str(model.tokenizer_dir),
        "train_data_dir": str(data),
        "output_dir": str(out),
        "output_name": "tiny",
        "resolution": 32,
        "bucket_reso_steps": 8,
        "min_bucket_reso": 16,
        "lora_rank": 4,
        "lora_alpha": 4,
        "learning_rate": 1e-3,
        "batch_size": 2,
        "max_train_steps": 4,
        "mixed_precision": "no",
        "seed": 3,
        "save_precision": "fp32",
        "logging": False,
        "dataset_checks": "off",
        "trigger_word": "zkstyle",
    }
    cfg.update(overrides)
    return cfg


def train_stopped_and_resumed(cfg: dict[str, Any], output_dir: Path, stop_step: int) -> Any:
    """Train `cfg` into `output_dir`, stopped through the STOP file after step `stop_step`, then resumed with
    `resume: auto`; returns the resumed run's TrainResult."""
    import pytest

    from lorascripts.config import config_from_dict
    from lorascripts.errors import StopRequested
    from lorascripts.run.events import STOP_FILE_NAME
    from lorascripts.train.trainer import train

    cut = {**cfg, "output_dir": str(output_dir)}

    def on_event(event: dict) -> None:
        if event["event"] == "step" and event["step"] == stop_step:
            (output_dir / STOP_FILE_NAME).touch()

    with pytest.raises(StopRequested):
        train(config_from_dict(cut), callbacks=[on_event])
    return train(config_from_dict({**cut, "resume": "auto"}))


def largest_difference(a: Path, b: Path) -> float:
    """The largest absolute difference between two LoRA files with the same keys (asserted)."""
    from safetensors.torch import load_file

    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    return max((first[k].float() - second[k].float()).abs().max().item() for k in first)
