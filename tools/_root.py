"""Imported first by each script in tools/: puts the repository root on sys.path so that `lorascripts` is found
when a script is run by path with any Python that has the requirements (ComfyUI's, the WebUI's, a fresh venv)
from any folder, as `python train.py` finds it by living in the root. Without this, `python tools/x.py` sees
only tools/ and needs `pip install -e .`; the package itself never touches sys.path. Run with a Python for which install.py built an engine
environment (a WebUI's), the script runs again with that environment's Python."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# In a WebUI's Python (pinned packages), the command runs again with the engine environment install.py built.
from lorascripts.host.engine_env import run_in_engine_env  # noqa: E402

run_in_engine_env()
