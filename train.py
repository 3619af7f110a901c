"""Train a LoRA: `python train.py --config configs/quickstart.yaml [--set key=value ...]`.

A thin entry point; everything real lives in the `lorascripts` package (see `python -m lorascripts --help`).
"""

import sys

from lorascripts.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
