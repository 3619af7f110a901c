"""The WebUI tab under real gradio for the host tests: the venvs pinned like the real WebUIs (tests/host_envs.py:
AUTOMATIC1111 1.10.1 with gradio 3.41 and pydantic 1, Forge with gradio 4.40 and pydantic 2.8), each after
our install.py ran in it as the WebUI runs it (so training and captioning go to the engine's own environment,
as for a user), the stand-in hooks (tests/webui_standin), and the launcher (tests/webui_launch.py) that loads
our `scripts/` like the WebUI does.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

from comfy_host import REPO, ServerProcess, free_port
from host_envs import FORGE_PINS, TORCH, a1111_pins, pinned_python

LAUNCHER = Path(__file__).resolve().parent / "webui_launch.py"
STANDIN = Path(__file__).resolve().parent / "webui_standin"
WEBUI_HOSTS = {"3": "a1111-1.10.1", "4": "forge-gradio4"}


def webui_pins(host: str) -> list[str]:
    return a1111_pins() if host == "a1111-1.10.1" else [*FORGE_PINS, TORCH]


def webui_python(gradio: str) -> Path:
    """The pinned WebUI venv of gradio line `gradio` ("3" or "4"), with our install.py run in it once."""
    host = WEBUI_HOSTS[gradio]
    python = pinned_python(f"venv-{host}", webui_pins(host))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(STANDIN)  # `import launch` works: install.py runs as in the WebUI
    done = subprocess.run([str(python), str(REPO / "install.py")], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "could not" not in done.stdout, done.stdout + done.stderr
    return python


class WebUIServer(ServerProcess):
    """The stand-in WebUI with our extension, on 127.0.0.1."""

    name = "the WebUI stand-in"

    def __init__(self, root: Path, gradio: str, lora_dir: Path | None = None) -> None:
        self.root, self.port = root, free_port()
        env = {
            **os.environ,
            "WEBUI_STANDIN_ROOT": str(root),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONPATH": "",  # like the WebUI: only the WebUI's own folders, not this checkout
        }
        args = [str(webui_python(gradio)), str(LAUNCHER), "--extension", str(REPO), "--port", str(self.port)]
        if lora_dir is not None:
            args += ["--lora-dir", str(lora_dir)]
        self._launch(args, root, root / "webui.log", env)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _ready(self) -> bool:
        with urllib.request.urlopen(self.url, timeout=5) as r:
            return r.status == 200

    def calls(self) -> list[str]:
        path = self.root / "webui_calls.log"
        return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
