"""install.py in a fresh venv, in the three situations it runs in (WebUI, ComfyUI-Manager, by hand), against a
local wheel folder (no network): installs what is missing or too old, does nothing the second time, never
touches torch, survives a package that cannot be installed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from comfy_host import REPO

STANDIN = Path(__file__).resolve().parent / "webui_standin"
ARTIFACTS = REPO / ".cache" / "test-artifacts"
OK_REQUIREMENTS = (
    "demo-alpha>=2.0\ndemo_beta  # a comment\ntorch>=2.0\nxformers\ndemo-marker; python_version < '3'\n"
)
BAD_REQUIREMENTS = "demo-gamma>=1.0\ndemo-missing>=1.0\n"


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel (a module with __version__), written with zipfile."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "demo-alpha", "1.0")
    make_wheel(folder, "demo-alpha", "2.0")
    make_wheel(folder, "demo-beta", "1.5")
    make_wheel(folder, "demo-marker", "1.0")
    make_wheel(folder, "torch", "1.0")  # the host's torch, "too old" for our requirement on purpose
    make_wheel(folder, "torch", "3.0")  # a newer torch pip could reach for: it must never be installed
    make_wheel(folder, "demo-gamma", "1.0", ("torch>=3.0",))  # only installable by upgrading torch
    return folder


def _env(wheels: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _fresh_venv(path: Path, wheels: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    for spec in ("torch==1.0", "demo-alpha==1.0"):
        subprocess.run([str(python), "-m", "pip", "install", "-q", spec], env=_env(wheels), check=True)
    return python


def _versions(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def _extension(where: Path, requirements: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "install.py", where / "install.py")
    (where / "requirements.txt").write_text(requirements, encoding="utf-8")
    return where


def _run(
    python: Path, ext: Path, mode: str, wheels: Path, cwd: Path
) -> tuple[subprocess.CompletedProcess, float]:
    env = _env(wheels)
    if mode == "webui":  # the WebUI runs it with its root on PYTHONPATH, where `launch` lives
        env["PYTHONPATH"] = str(STANDIN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(python), str(ext / "install.py")],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, time.perf_counter() - started


@pytest.mark.parametrize("mode", ["webui", "comfyui-manager", "manual"])
def test_install_py_in_each_host(mode, wheels, tmp_path):
    python = _fresh_venv(tmp_path / "venv", wheels)
    base = tmp_path / ("custom_nodes" if mode == "comfyui-manager" else "extensions")
    ext = _extension(base / "lora-scripts", OK_REQUIREMENTS)
    cwd = ext if mode == "comfyui-manager" else tmp_path

    first, _ = _run(python, ext, mode, wheels, cwd)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{mode}: installed 2 of 2" in first.stdout, first.stdout
    versions = _versions(python)
    assert versions["demo-alpha"] == "2.0" and versions["demo-beta"] == "1.5"  # too old, and missing
    assert versions["torch"] == "1.0" and "xformers" not in versions  # host-owned: never touched
    assert "demo-marker" not in versions  # its marker says not on this Python

    second, seconds = _run(python, ext, mode, wheels, cwd)
    assert second.returncode == 0 and "installing" not in second.stdout, second.stdout
    assert _versions(python) == versions
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"install-noop-{mode}.txt").write_text(f"{seconds:.3f} s for a run with nothing to do\n")

    (ext / "requirements.txt").write_text(OK_REQUIREMENTS + BAD_REQUIREMENTS, encoding="utf-8")
    third, _ = _run(python, ext, mode, wheels, cwd)
    assert third.returncode == 0 and "Traceback" not in third.stdout + third.stderr
    for bad in ("demo-gamma>=1.0", "demo-missing>=1.0"):
        assert f"could not install {bad}" in third.stdout and f'-m pip install "{bad}"' in third.stdout
    assert "installed 0 of 2" in third.stdout
    assert _versions(python)["torch"] == "1.0"  # demo-gamma wanted torch 3.0: refused, not upgraded


def test_install_py_without_torch_installs_nothing(wheels, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    ext = _extension(tmp_path / "ext", OK_REQUIREMENTS)
    done, _ = _run(python, ext, "manual", wheels, tmp_path)
    assert done.returncode == 0 and "torch is not installed" in done.stdout
    assert "demo-alpha" not in _versions(python)  # peft & co would have pulled a multi-GB torch


def test_install_py_survives_a_broken_requirements_file(wheels, tmp_path):
    python = _fresh_venv(tmp_path / "venv", wheels)
    ext = _extension(tmp_path / "ext", "demo-alpha>=2.0\nthis is not a requirement !!\n")
    (ext / "requirements.txt").chmod(0o644)
    done, _ = _run(python, ext, "manual", wheels, tmp_path)
    assert done.returncode == 0 and "ignoring unreadable requirement" in done.stdout
    assert _versions(python)["demo-alpha"] == "2.0"
    (ext / "requirements.txt").unlink()
    gone, _ = _run(python, ext, "webui", wheels, tmp_path)
    assert gone.returncode == 0 and "install.py failed" in gone.stdout and "requirements.txt" in gone.stdout
