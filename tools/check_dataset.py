"""Check a dataset before training: python tools/check_dataset.py DIR [--resolution 512] [--trigger WORD]"""

import argparse
import sys
from pathlib import Path

import _root  # noqa: F401, I001 - the repository root on sys.path (see _root.py)

from lorascripts.data.checks import check_dataset
from lorascripts.data.report import write_html_report
from lorascripts.errors import LoraScriptsError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--trigger", default="")
    parser.add_argument(
        "--family",
        default=None,
        help="sd1, sd2, sdxl, flux1 or zimage: whose text-encoder window captions must fit",
    )
    parser.add_argument(
        "--html", type=Path, help="review page to write (default: <folder>/dataset_report.html)"
    )
    args = parser.parse_args()
    try:
        report = check_dataset(
            args.folder, resolution=args.resolution, trigger_word=args.trigger, family=args.family
        )
    except LoraScriptsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    page = write_html_report(report, args.html or args.folder / "dataset_report.html")
    print(report.summary())
    print(f"review page: {page}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
