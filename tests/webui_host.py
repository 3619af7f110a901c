"""The WebUI tab under real gradio for the host tests: one venv per gradio line we support, the stand-in hooks
(tests/webui_standin), and the launcher (tests/webui_launch.py) that loads our `scripts/` like the WebUI does.

Each venv sees this venv's packages through a .pth file and adds, in its own site-packages (which come first),
what that WebUI pins differently: AUTOMATIC1111 1.10 runs gradio 3.41 with pydantic 1 and fastapi 0.94; Forge
runs gradio 4.40 with pydantic 2.8 (newer pydantic breaks its API page). Both gradio lines need huggingface_hub < 1, so these venvs also run the engine on
transformers 4.x and an older diffusers, as those WebUIs do. Cached under .cache/hosts.
"""

from __future__ import annotations

import hashlib
import os
import site
import subprocess
import sys
import urllib.request
from pathlib import Path

from comfy_host import CACHE, REPO, ServerProcess, free_port

GRADIO_ENVS = {
    "3": ["gradio==3.41.2", "fastapi==0.94.0", "pydantic<2"],
    "4": ["gradio==4.40.0", "fastapi==0.112.2", "pydantic==2.8.2"],
}
ENGINE_ON_WEBUI = ["transformers>=4.46,<5", "huggingface_hub<1", "diffusers>=0.35,<0.50"]
LAUNCHER = Path(__file__).resolve().parent / "webui_launch.py"


def webui_python(gradio: str) -> Path:
    """A venv with gradio `gradio` (\"3\" or \"4\") and this venv's packages; built once."""
    specs = GRADIO_ENVS[gradio] + ENGINE_ON_WEBUI
    venv = CACHE / f"venv-webui-g{gradio}"
    python = venv / "bin" / "python"
    stamp = hashlib.sha256("\n".join(specs).encode()).hexdigest()[:16]
    ready = venv / ".ready"
    if ready.is_file() and ready.read_text() == stamp:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "main-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    subprocess.run([str(python), "-m", "pip", "install", "-q", *specs], check=True)
    ready.write_text(stamp)
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
