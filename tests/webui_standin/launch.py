"""Stand-in for the WebUI's `launch` module, which install.py may import when the WebUI runs it: the names
extensions use (AUTOMATIC1111 1.10 `launch_utils`), with the WebUI's own behaviour for each."""

import importlib.util
import os
import subprocess
import sys

index_url = os.environ.get("INDEX_URL", "")
python = sys.executable


def is_installed(package):
    return importlib.util.find_spec(package) is not None


def run_pip(command, desc=None, live=False):
    """What the WebUI does: `python -m pip <command> --prefer-binary` (+ its index), raising on failure."""
    index = f" --index-url {index_url}" if index_url else ""
    args = [python, "-m", "pip", *command.split(), "--prefer-binary", *index.split()]
    done = subprocess.run(args, capture_output=not live, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Couldn't install {desc}: {done.stderr}")
    return done.stdout
