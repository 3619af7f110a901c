"""(Re)generate datasets/quickstart: 24 toy-world pictures in "zkstyle" with metadata.csv captions."""

from __future__ import annotations

from pathlib import Path

import _root  # noqa: F401, I001 - the repository root on sys.path (see _root.py)

from lorascripts.toy.dataset import make_style_dataset

if __name__ == "__main__":
    folder = make_style_dataset(Path(__file__).resolve().parent.parent / "datasets" / "quickstart")
    print(f"wrote {folder}")  # noqa: T201 - command-line output
