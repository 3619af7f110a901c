"""The engine's own Python environment beside a host's: where it lives, whether it is ready, which Python runs
the training and captioning children, and whether a set of requirements is met as a given Python sees it.

Hosts pin their packages (AUTOMATIC1111 1.10.1 reinstalls transformers 4.30.2, pydantic 1, protobuf 3.20 ... at
every start); the engine needs newer ones. So when the host's environment cannot take the engine's
requirements without changing a package it already has, `install.py` builds a venv for the engine inside the
extension folder (`engine-env/<python>-<host id>/`): its own site-packages first, then the host's site-packages
through a `.pth` file, so the host's torch build (CUDA included) is reused and nothing multi-GB is downloaded,
while every package the engine needs newer shadows the host's copy for the engine's processes only. The host's
own process never sees that folder.

Standard library only, and no relative imports: `install.py` loads this file by path before anything else is
installed (pip vendors `packaging`, which is all the requirement checks need).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_FOLDER = "engine-env"
RECORD_NAME = "lora-scripts-env.json"
HOST_PTH_NAME = "lora-scripts-host-site.pth"
HOST_OWNED = frozenset({"torch", "torchvision", "torchaudio", "xformers"})
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the extension folder: holds `lorascripts/`
# What a Python module is called as a distribution, where the names differ (for "package X is missing").
IMPORT_TO_DIST = {
    "PIL": "Pillow",
    "yaml": "PyYAML",
    "lycoris": "lycoris-lora",
    "cv2": "opencv-python",
    "google": "protobuf",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
}


def normal_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def env_dir(root: Path = PACKAGE_ROOT, prefix: str | None = None) -> Path:
    """The engine environment for the host Python whose prefix is `prefix` (one per host environment, so a
    folder shared by two hosts, or a host whose venv moved, never runs on a stranger's torch)."""
    prefix = os.path.realpath(prefix or sys.prefix)
    tag = hashlib.sha256(prefix.encode("utf-8")).hexdigest()[:8]
    return root / ENV_FOLDER / f"py{sys.version_info[0]}{sys.version_info[1]}-{tag}"


def env_python(env: Path) -> Path:
    """The interpreter of a venv at `env`."""
    if os.name == "nt":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def env_site_packages(env: Path) -> Path:
    """The site-packages folder of a venv at `env` made by this Python version."""
    if os.name == "nt":
        return env / "Lib" / "site-packages"
    return env / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def host_site_dirs() -> list[str]:
    """The site-packages folders of the running (host) Python, in its own order."""
    import site

    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def read_record(env: Path) -> dict | None:
    """The record install.py writes once the environment is complete; None while it is not."""
    try:
        record = json.loads((env / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and env_python(env).is_file() else None


def engine_python(root: Path = PACKAGE_ROOT) -> str:
    """The Python that runs the engine's children: the engine environment when install.py built one for this
    host, else the host's own Python (whose packages then meet the requirements)."""
    override = os.environ.get("LORA_SCRIPTS_ENGINE_PYTHON")
    if override:
        return override
    env = env_dir(root)
    return str(env_python(env)) if read_record(env) is not None else sys.executable


def run_in_engine_env(argv: list[str] | None = None) -> None:
    """For the command-line scripts (train.py, tools/): when install.py built an engine environment for the
    Python running them (a WebUI's, whose pinned packages the engine cannot use), run the same command with the
    engine's Python instead and exit with its code; otherwise return and let the script go on."""
    engine = engine_python()
    if engine == sys.executable or os.environ.get("LORA_SCRIPTS_IN_ENGINE_ENV"):
        return
    import subprocess

    argv = list(sys.argv if argv is None else argv)
    env = {**os.environ, "LORA_SCRIPTS_IN_ENGINE_ENV": "1"}
    try:
        sys.exit(subprocess.call([engine, *argv], env=env))
    except KeyboardInterrupt:
        sys.exit(130)


def requirements_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_requirement_lines(path: Path) -> list[str]:
    """Requirement lines of a requirements file, comments and pip options dropped."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def packaging_tools():  # noqa: ANN201 - packaging's classes, from wherever they are available
    """(Requirement, Version, InvalidRequirement): from packaging, or the copy pip vendors in a bare venv."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.version import Version
    except ImportError:
        from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
        from pip._vendor.packaging.version import Version
    return Requirement, Version, InvalidRequirement


def visible_distributions(paths: list[str] | None = None) -> dict[str, metadata.Distribution]:
    """Normalised name -> the distribution a Python with `paths` as its sys.path would import (first wins)."""
    found: dict[str, metadata.Distribution] = {}
    dists = metadata.distributions() if paths is None else metadata.distributions(path=paths)
    for dist in dists:
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normal_name(name), dist)
    return found


@dataclass
class Unmet:
    """One requirement the environment does not meet: `have` is None when the package is missing."""

    requirement: str
    name: str
    have: str | None
    needed_by: str

    def __str__(self) -> str:
        state = "missing" if self.have is None else f"{self.have} installed"
        return f"{self.requirement} ({state}; needed by {self.needed_by})"


def unmet_requirements(
    lines: list[str], dists: dict[str, metadata.Distribution], skip: frozenset[str] = HOST_OWNED
) -> list[Unmet]:
    """Every requirement in the closure of `lines` (their dependencies, their dependencies' ...) that the
    distributions `dists` do not meet. Unreadable lines are reported as unmet, never ignored."""
    requirement_cls, version_cls, invalid = packaging_tools()
    problems: list[Unmet] = []
    queue: list[tuple[str, str]] = [(line, "lora-scripts") for line in lines]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        text, parent = queue.pop(0)
        try:
            req = requirement_cls(text)
        except invalid:
            problems.append(Unmet(text, text, None, f"{parent} (unreadable requirement)"))
            continue
        name = normal_name(req.name)
        extras = frozenset(req.extras)
        if name in skip or (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = dists.get(name)
        if dist is None:
            problems.append(Unmet(text, req.name, None, parent))
            continue
        try:
            ok = req.specifier.contains(version_cls(dist.version), prereleases=True)
        except Exception:  # noqa: BLE001 - a non-PEP 440 version: trust what is there
            ok = True
        if not ok:
            problems.append(Unmet(text, req.name, dist.version, parent))
            continue
        for child in dist.requires or []:
            queue.extend(_applicable(child, extras, req.name, requirement_cls, invalid))
    return problems


def _applicable(text: str, extras: frozenset[str], parent: str, requirement_cls, invalid) -> list:  # noqa: ANN001
    """`text` as a queue entry (requirement, parent) when its marker applies here with the parent's extras."""
    try:
        req = requirement_cls(text)
    except invalid:
        return []
    if req.marker is not None:
        environments = [{"extra": e} for e in sorted(extras)] or [{"extra": ""}]
        if not any(req.marker.evaluate(env) for env in environments):
            return []
    return [(text, parent)]


def dist_for_module(module: str) -> str:
    """The distribution that provides top-level module `module` (as installed, or by the usual name)."""
    top = module.split(".")[0]
    try:
        names = metadata.packages_distributions().get(top)
    except Exception:  # noqa: BLE001 - broken metadata somewhere in the environment
        names = None
    return names[0] if names else IMPORT_TO_DIST.get(top, top)
