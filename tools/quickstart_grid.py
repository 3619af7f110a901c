"""Draw the before/after grid of a trained toy-model LoRA and print its style scores.

python tools/quickstart_grid.py --config configs/quickstart.yaml [--set output_dir=elsewhere ...]
(the same --set overrides as the training run, so the grid is drawn from the LoRA that run wrote)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import _root  # noqa: F401, I001 - the repository root on sys.path (see _root.py)

from lorascripts.config import load_config
from lorascripts.models import load_base_model
from lorascripts.toy.evaluate import evaluate_style, write_report
from lorascripts.train.setup import output_name_for, resolve_base_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="as in train.py"
    )
    parser.add_argument(
        "--steps", type=int, default=25, help="denoising steps per picture (the README's grid: 25)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config, args.overrides)
    out = Path(cfg.output_dir)
    lora = out / f"{output_name_for(cfg)}.safetensors"
    base = load_base_model(resolve_base_model(cfg.base_model))
    report, result = evaluate_style(base, lora, steps=args.steps)
    grid = write_report(report, result, out)
    print(report.table())  # noqa: T201 - command-line output
    print(f"grid: {grid}")  # noqa: T201


if __name__ == "__main__":
    main()
