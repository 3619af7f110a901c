"""Train a LoRA: `python train.py --config configs/quickstart.yaml [--set key=value ...]`.

A thin entry point; everything real lives in the `lorascripts` package (see `python -m lorascripts --help`).
"""

import sys

from lorascripts.host.engine_env import run_in_engine_env

if __name__ == "__main__":
    run_in_engine_env()  # a WebUI's Python: the engine environment install.py built for it runs the command
    from lorascripts.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
