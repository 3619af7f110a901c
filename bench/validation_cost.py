"""What validation loss costs: seconds of one evaluation against seconds of training between two evaluations.

Trains the built-in toy model on the quickstart dataset with `validation_split` held out and reads the times
of the `step` and `validation` events: a validation's time is the gap it adds after its step, the step time is
the median gap between ordinary steps. Reported: the share of training time validation takes at the default
`validate_every_n_steps`, and the model the docs state (forward passes of images x timesteps against
forward+backward of a batch: validation.expected_share).

    python -m bench.validation_cost [--steps 60] [--every 20] [--split 4] [--batch 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from lorascripts.config import config_from_dict
from lorascripts.config.schema import TrainConfig
from lorascripts.run.events import read_events
from lorascripts.toy.dataset import make_style_dataset
from lorascripts.train.trainer import train
from lorascripts.train.validation import expected_share


def measure(steps: int, every: int, split: int, batch: int, work: Path) -> dict[str, float]:
    data = make_style_dataset(work / "data", count=24)
    out = work / "out"
    cfg = {
        "base_model": "toy",
        "train_data_dir": str(data),
        "output_dir": str(out),
        "resolution": 64,
        "bucket_reso_steps": 8,
        "min_bucket_reso": 32,
        "lora_rank": 8,
        "batch_size": batch,
        "max_train_steps": steps,
        "validation_split": split,
        "validate_every_n_steps": every,
        "logging": False,
        "dataset_checks": "off",
        "mixed_precision": "no",
    }
    train(config_from_dict(cfg))
    events = [e for e in read_events(out / "events.jsonl") if e["event"] in ("step", "validation")]
    step_gaps, validation_gaps = [], []
    for before, after in zip(events, events[1:]):
        if after["event"] == "validation":
            validation_gaps.append(after["time"] - before["time"])
        elif before["event"] == "step" and after["step"] > 1:
            step_gaps.append(after["time"] - before["time"])
    step_s, validation_s = statistics.median(step_gaps), statistics.median(validation_gaps)
    default_every = TrainConfig.__dataclass_fields__["validate_every_n_steps"].default
    timesteps = TrainConfig.__dataclass_fields__["validation_timesteps"].default
    return {
        "step_s": step_s,
        "validation_s": validation_s,
        "default_every": default_every,
        "share_at_default": validation_s / (validation_s + default_every * step_s),
        "model_share": expected_share(split, timesteps, batch, default_every),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--split", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args.steps, args.every, args.split, args.batch, Path(tmp))
    print(
        f"toy model, batch {args.batch}, {args.split} validation images: step {r['step_s']:.3f} s, "
        f"one validation {r['validation_s']:.3f} s -> {100 * r['share_at_default']:.1f}% of training time at "
        f"validate_every_n_steps={r['default_every']} (model: {100 * r['model_share']:.1f}%)"
    )


if __name__ == "__main__":
    main()
