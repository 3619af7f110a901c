"""Install what lora-scripts needs into the host's Python, and nothing else. Safe to run at every start.

Runs in three situations: by AUTOMATIC1111/Forge at each launch (`import launch` works), by ComfyUI-Manager
after it installed requirements.txt (no `launch`), and by hand (`python install.py`). In all three it
- installs a requirement from requirements.txt only when it is missing or older than asked,
- never installs or upgrades torch, torchvision, torchaudio or xformers (the host owns them; pip gets a
  constraints file pinning the installed ones, so no dependency can drag them along either),
- installs nothing at all while torch itself is missing (it says how to get the right build first),
- never raises: a package that fails is reported with the command that fixes it, and the host starts anyway,
- costs well under a second when nothing is to do (installed versions are read from package metadata; pip is
  not even imported).
Standard library only: this file runs before anything else is installed.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST_OWNED = {"torch", "torchvision", "torchaudio", "xformers"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_tools():  # noqa: ANN202 - packaging's classes, from wherever they are available
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # a bare venv: pip vendors packaging
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.version import Version
    return Requirement, Version


def read_requirements(path: Path) -> list[str]:
    """Requirement lines of requirements.txt, comments and pip options dropped."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def installed_versions() -> dict[str, str]:
    """Normalised distribution name -> version, for everything this Python can import."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_normal(name), dist.version)
    return found


def needed(lines: list[str], installed: dict[str, str]) -> list[str]:
    """Requirements to install: only missing or too-old packages, never host-owned ones."""
    requirement, version = _requirement_tools()
    todo = []
    for line in lines:
        try:
            req = requirement(line)
        except Exception:  # an unparsable line is reported, not fatal
            print(f"[lora-scripts] ignoring unreadable requirement {line!r}")
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        if _normal(req.name) in HOST_OWNED:
            continue
        have = installed.get(_normal(req.name))
        if have is None:
            todo.append(line)
            continue
        try:
            ok = req.specifier.contains(version(have), prereleases=True)
        except Exception:  # a non-PEP 440 local version: trust what is there
            ok = True
        if not ok:
            todo.append(line)
    return todo


def _constraints(installed: dict[str, str]) -> Path:
    """A pip constraints file pinning the host-owned packages at their installed versions."""
    pins = [f"{name}=={installed[name]}" for name in sorted(HOST_OWNED) if name in installed]
    fd, path = tempfile.mkstemp(prefix="lora-scripts-constraints-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(pins) + "\n")
    return Path(path)


def _index_args() -> list[str]:
    """The WebUI's own package index when it sets one (launch.index_url, from INDEX_URL)."""
    launch = sys.modules.get("launch")
    url = getattr(launch, "index_url", "") if launch else ""
    return ["--index-url", url] if url else []


def install(todo: list[str], installed: dict[str, str]) -> list[str]:
    """pip-install each requirement on its own (one failure does not block the rest); returns the failures."""
    constraints = _constraints(installed)
    failed = []
    try:
        for line in todo:
            print(f"[lora-scripts] installing {line}")
            cmd = [sys.executable, "-m", "pip", "install", line, "-c", str(constraints), *_index_args()]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                failed.append(line)
                tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-4:])
                print(
                    f"[lora-scripts] could not install {line}:\n{tail}\n"
                    f'  fix: run  "{sys.executable}" -m pip install "{line}"  and read its message'
                )
    finally:
        constraints.unlink(missing_ok=True)
    return failed


def mode() -> str:
    try:
        import launch  # noqa: F401 - only the WebUI has it on sys.path

        return "webui"
    except ImportError:
        return "comfyui-manager" if "custom_nodes" in HERE.parts else "manual"


def main() -> int:
    started = time.perf_counter()
    try:
        lines = read_requirements(HERE / "requirements.txt")
        installed = installed_versions()
        todo = needed(lines, installed)
        where = mode()
        if todo and "torch" not in installed:
            # peft, accelerate and lycoris depend on torch: pip would fetch a multi-GB build that may not
            # match this machine's GPU. The host (or the user) installs torch; we only add our packages.
            print(
                "[lora-scripts] torch is not installed in this Python, so nothing was installed. Install the "
                "torch build for your GPU first (https://pytorch.org/get-started/locally/), then run install.py "
                "again."
            )
            return 0
        if not todo:
            if where == "manual":
                print(f"[lora-scripts] all requirements present ({time.perf_counter() - started:.2f} s)")
            return 0
        failed = install(todo, installed)
        ok = len(todo) - len(failed)
        print(
            f"[lora-scripts] {where}: installed {ok} of {len(todo)} in {time.perf_counter() - started:.1f} s"
        )
        if failed:
            print("[lora-scripts] training needs the packages above; the host itself is unaffected.")
    except Exception as exc:  # never stop the host from starting
        print(f"[lora-scripts] install.py failed ({type(exc).__name__}: {exc}); run it by hand to see more")
    return 0


if __name__ == "__main__":  # the WebUI and ComfyUI-Manager both run it as a script, with this Python
    sys.exit(main())
