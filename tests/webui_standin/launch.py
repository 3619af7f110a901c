"""Stand-in for the WebUI's `launch` module, which install.py may import when the WebUI runs it."""

import os

index_url = os.environ.get("INDEX_URL", "")


def is_installed(package):
    import importlib.util

    return importlib.util.find_spec(package) is not None
