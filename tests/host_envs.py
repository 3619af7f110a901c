"""Python environments pinned like the real hosts', for tests/test_host_envs.py (built once, cached under
.cache/hosts; each is a plain venv with its own torch 2.13 CPU, as a user's host has one):

- AUTOMATIC1111 1.10.1: its requirements_versions.txt (../shared/hosts), setuptools 80.9.0 instead of 69.5.1
  (69.5.1 cannot sit beside torch 2.13, see ../shared/hosts/README.md);
- Forge (gradio 4.40 line): the pins of lllyasviel/stable-diffusion-webui-forge's requirements_versions.txt that
  the engine shares (read on 2026-12-02), with gradio 4.40 and pydantic 2.8;
- ComfyUI 0.3.75: its requirements.txt (../shared/hosts) minus torchvision/torchaudio, which no code here needs;
- the floors: our requirements.txt at the lowest versions it allows, beside this venv's packages (a .pth file),
  so the engine's import and training smoke test runs on exactly the declared floors.
"""

from __future__ import annotations

import hashlib
import os
import re
import site
import subprocess
import sys
from pathlib import Path

from comfy_host import CACHE, REPO, SITECUSTOMIZE, venv_purelib

# the shared references beside the repository; a checkout elsewhere (a git worktree) names them in LORA_SCRIPTS_SHARED
HOSTS = Path(os.environ.get("LORA_SCRIPTS_SHARED") or REPO.parent / "shared") / "hosts"
TORCH = "torch==2.13.0"  # the CPU build on this machine's disk; an unpinned torch would fetch a CUDA build
# Forge's pins of what the engine also uses (requirements_versions.txt, 2026-12-02): all older than ours.
FORGE_PINS = [
    "gradio==4.40.0", "fastapi==0.104.1", "pydantic==2.8.2", "transformers==4.46.1", "diffusers==0.31.0",
    "peft==0.13.2", "huggingface-hub==0.26.2", "accelerate==0.21.0", "safetensors==0.4.2", "Pillow==9.5.0",
    "protobuf==3.20.0", "numpy==1.26.2", "tqdm==4.66.1", "setuptools==80.9.0",
]  # fmt: skip


def pins_of(path: Path) -> list[str]:
    """Requirement lines of a host's requirements file as a user installs them here."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if re.match(r"^setuptools\b", line):
            line = "setuptools==80.9.0"  # 69.5.1 cannot be installed beside torch 2.13 (hosts/README.md)
        if re.match(r"^(torchvision|torchaudio)\b", line):
            continue
        lines.append(TORCH if line == "torch" else line)
    return lines


def a1111_pins() -> list[str]:
    return pins_of(HOSTS / "a1111-1.10.1-requirements_versions.txt")


def comfyui_pins() -> list[str]:
    return pins_of(HOSTS / "comfyui-0.3.75-requirements.txt")


def floor_pins() -> list[str]:
    """requirements.txt with every `>=X` lower bound turned into `==X`."""
    lines = [line for line in pins_of(REPO / "requirements.txt")]
    return [re.sub(r">=([^,;\s]+)[^;]*", r"==\1", line) for line in lines]


def pinned_python(name: str, specs: list[str], see_this_venv: bool = False) -> Path:
    """A venv at .cache/hosts/<name> with `specs` installed (and this venv's packages behind its own when
    `see_this_venv`); rebuilt when the specs change."""
    venv = CACHE / name
    python = venv / "bin" / "python"
    stamp = hashlib.sha256("\n".join([*specs, str(see_this_venv)]).encode()).hexdigest()[:16]
    ready = venv / ".ready"
    if ready.is_file() and ready.read_text() == stamp and python.is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    purelib = venv_purelib(python)
    # The PyPI torchvision that these hosts' pins pull in lacks its C++ ops for this machine's torch 2.13 CPU
    # build (HOSTS.md); a real host has a matching pair. Declaring the op schemas lets it import, as for ComfyUI.
    (purelib / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    if see_this_venv:
        (purelib / "this-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    requirements = venv / "pinned-requirements.txt"
    requirements.write_text("\n".join(specs) + "\n", encoding="utf-8")
    constraints = venv / "torch-constraint.txt"
    constraints.write_text(TORCH + "\n", encoding="utf-8")
    subprocess.run(
        # --no-compile: no byte-compiling of every installed module (torch alone: ~10 s a venv); imports compile lazily
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-compile",
            "-r",
            str(requirements),
            "-c",
            str(constraints),
        ],
        check=True,
    )
    ready.write_text(stamp)
    return python
