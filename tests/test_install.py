"""install.py in fresh venvs, in the three situations it runs in (WebUI, ComfyUI-Manager, by hand), against a
local wheel folder (no network): a package the host has is never changed; missing packages are added to the host
only outside the WebUI and only when nothing installed moves; otherwise the engine gets its own environment
(which the children then use); the second run does nothing; torch is never installed; failures are survived.
The same rules in the real pinned host environments are in test_host_envs.py."""

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
    make_wheel(folder, "demo-delta", "1.0", ("demo-alpha>=2.0",))  # adding it would upgrade the host's alpha
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
            "import importlib.metadata as m, json; seen = {}; "  # the first on sys.path is the one imported
            "[seen.setdefault(d.metadata['Name'], d.version) for d in m.distributions()]; print(json.dumps(seen))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


# The extension as install.py needs it: requirements.txt, install.py, the engine_env module it loads, and (for
# the engine environment's final check) a `python -m lorascripts doctor` that imports what the demo requires.
DOCTOR = """import importlib, sys
wanted = [line.split(">")[0].split("=")[0].split(";")[0].strip().replace("-", "_")
          for line in open("requirements.txt").read().splitlines() if line.strip() and not line.startswith("#")]
missing = [m for m in wanted if m not in ("torch", "xformers") and importlib.util.find_spec(m.split()[0]) is None]
print("problem:", missing) if missing else None
sys.exit(1 if missing else 0)
"""


def _extension(where: Path, requirements: str) -> Path:
    (where / "lorascripts" / "host").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "install.py", where / "install.py")
    shutil.copyfile(REPO / "lorascripts" / "host" / "engine_env.py", where / "lorascripts/host/engine_env.py")
    (where / "lorascripts" / "__init__.py").write_text("")
    (where / "lorascripts" / "host" / "__init__.py").write_text("")
    (where / "lorascripts" / "__main__.py").write_text("import importlib.util\n" + DOCTOR)
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


def _engine_python(host: Path, ext: Path) -> str:
    """What the hosts' children would run with, asked of the host's Python (engine_env.engine_python)."""
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('ee', {str(ext / 'lorascripts/host/engine_env.py')!r}); "
        "m = importlib.util.module_from_spec(spec); sys.modules['ee'] = m; spec.loader.exec_module(m); "
        f"print(m.engine_python(__import__('pathlib').Path({str(ext)!r})))"
    )
    return subprocess.run([str(host), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _artifact(name: str, text: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_text(text)


@pytest.mark.parametrize("mode", ["comfyui-manager", "manual"])
def test_missing_packages_are_added_with_every_installed_one_held(mode, wheels, tmp_path):
    python = _fresh_venv(tmp_path / "venv", wheels)
    base = tmp_path / ("custom_nodes" if mode == "comfyui-manager" else "extensions")
    ext = _extension(base / "lora-scripts", "demo-alpha>=1.0\ndemo_beta  # a comment\ntorch>=0.5\nxformers\n")
    cwd = ext if mode == "comfyui-manager" else tmp_path
    before = _versions(python)

    first, _ = _run(python, ext, mode, wheels, cwd)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed the missing packages into this Python" in first.stdout, first.stdout
    after = _versions(python)
    assert after["demo-beta"] == "1.5" and "xformers" not in after  # missing: added; host-owned: never
    assert {k: after[k] for k in before} == before  # nothing the host had moved
    assert _engine_python(python, ext) == str(python)  # no engine environment was needed
    assert not (ext / "engine-env").exists()

    second, seconds = _run(python, ext, mode, wheels, cwd)
    assert second.returncode == 0 and "install" not in second.stdout.replace("install.py", ""), second.stdout
    assert _versions(python) == after
    _artifact(f"install-noop-{mode}.txt", f"{seconds:.3f} s for a run with nothing to do\n")


@pytest.mark.parametrize(
    ("mode", "requirements"),
    [
        ("manual", "demo-alpha>=2.0\ndemo-beta\n"),  # the host's alpha 1.0 is too old
        ("comfyui-manager", "demo-delta\n"),  # missing, but it needs a newer alpha than the host's
        ("webui", "demo-beta\n"),  # only missing, but the WebUI's environment is never added to
    ],
)
def test_the_engine_gets_its_own_environment_when_the_host_would_change(mode, requirements, wheels, tmp_path):
    python = _fresh_venv(tmp_path / "venv", wheels)
    base = tmp_path / ("custom_nodes" if mode == "comfyui-manager" else "extensions")
    ext = _extension(base / "lora-scripts", requirements + "torch>=0.5\n")
    before = _versions(python)

    first, _ = _run(python, ext, mode, wheels, ext)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "engine environment ready" in first.stdout, first.stdout
    assert _versions(python) == before  # the host's environment is exactly as it was
    engine = Path(_engine_python(python, ext))
    assert engine != python and str(ext / "engine-env") in str(engine)
    seen = _versions(engine)  # the engine's own packages first, then the host's (torch among them)
    assert seen["torch"] == "1.0" and seen["demo-beta" if "beta" in requirements else "demo-delta"]
    assert seen["demo-alpha"] == ("1.0" if mode == "webui" else "2.0")
    own = {
        d.name.split("-")[0] for d in (engine.parent.parent / "lib").glob("python*/site-packages/*.dist-info")
    }
    assert "torch" not in own  # reused from the host, never installed again

    second, seconds = _run(python, ext, mode, wheels, ext)
    assert second.returncode == 0 and "setting up" not in second.stdout, second.stdout
    assert "adding" not in second.stdout and "not met" not in second.stdout, second.stdout
    assert _versions(python) == before and _versions(engine) == seen
    _artifact(f"install-noop-engine-{mode}.txt", f"{seconds:.3f} s for a run with nothing to do\n")

    (ext / "requirements.txt").write_text(requirements + "demo-marker; python_version > '3'\n")
    third, _ = _run(
        python, ext, mode, wheels, ext
    )  # requirements changed: the engine env is brought up to date
    assert "engine environment ready" in third.stdout, third.stdout
    assert _versions(engine)["demo-marker"] == "1.0" and _versions(python) == before


def test_failures_are_reported_with_the_fix_and_torch_is_never_upgraded(wheels, tmp_path):
    python = _fresh_venv(tmp_path / "venv", wheels)
    ext = _extension(tmp_path / "ext", "demo-gamma>=1.0\ndemo-missing>=1.0\n")
    done, _ = _run(python, ext, "manual", wheels, tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr
    assert "could not install the engine's packages" in done.stdout and "-m pip install -r" in done.stdout
    assert _versions(python)["torch"] == "1.0"  # demo-gamma wanted torch 3.0: refused, not upgraded
    assert _engine_python(python, ext) == str(python)  # a half-built environment is never used


def test_install_py_without_torch_installs_nothing(wheels, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    ext = _extension(tmp_path / "ext", OK_REQUIREMENTS)
    done, _ = _run(python, ext, "manual", wheels, tmp_path)
    assert done.returncode == 0 and "torch is not installed" in done.stdout
    assert "demo-alpha" not in _versions(python)  # peft & co would have pulled a multi-GB torch
    assert not (ext / "engine-env").exists()


def test_install_py_survives_a_broken_requirements_file(wheels, tmp_path):
    python = _fresh_venv(tmp_path / "venv", wheels)
    ext = _extension(tmp_path / "ext", "demo-alpha>=1.0\nthis is not a requirement !!\n")
    done, _ = _run(python, ext, "manual", wheels, tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr
    assert "this is not a requirement !!" in done.stdout  # reported as not met, never silently dropped
    (ext / "requirements.txt").unlink()
    gone, _ = _run(python, ext, "webui", wheels, tmp_path)
    assert gone.returncode == 0 and "install.py failed" in gone.stdout and "requirements.txt" in gone.stdout
