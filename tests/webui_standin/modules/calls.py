"""Records which WebUI hooks were called (one name per line) so tests can check them."""

import os

from . import paths


def record(name: str) -> None:
    with open(os.path.join(paths.script_path, "webui_calls.log"), "a", encoding="utf-8") as fh:
        fh.write(name + "\n")
