"""Caption a folder of images: python tools/auto_label.py --input data/style --output data/style/metadata.csv"""

import sys

from lorascripts.caption.cli import main

if __name__ == "__main__":
    sys.exit(main())
