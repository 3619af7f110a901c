"""Draw the before/after grid of a trained toy-model LoRA and print its style scores.

python tools/quickstart_grid.py --config configs/quickstart.yaml
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lorascripts.config import load_config
from lorascripts.models import load_base_model
from lorascripts.toy.evaluate import evaluate_style, write_report
from lorascripts.train.setup import output_name_for, resolve_base_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config)
    out = Path(cfg.output_dir)
    lora = out / f"{output_name_for(cfg)}.safetensors"
    base = load_base_model(resolve_base_model(cfg.base_model))
    report, result = evaluate_style(base, lora)
    grid = write_report(report, result, out)
    print(report.table())  # noqa: T201 - command-line output
    print(f"grid: {grid}")  # noqa: T201


if __name__ == "__main__":
    main()
