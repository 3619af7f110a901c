"""Caption a folder of images: python tools/auto_label.py --input data/style --output data/style/metadata.csv"""

import sys

import _root  # noqa: F401, I001 - the repository root on sys.path (see _root.py)

from lorascripts.caption.cli import main

if __name__ == "__main__":
    sys.exit(main())
