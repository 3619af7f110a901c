"""Make the engine's packages available without ever changing the host's. Safe to run at every start.

Runs in three situations: by AUTOMATIC1111/Forge at each launch (`import launch` works), by ComfyUI-Manager
after it installed requirements.txt (no `launch`), and by hand (`python install.py`). The rule in all three:
**a package the host already has is never upgraded, downgraded or removed.**

- If this Python already meets requirements.txt (and every dependency of it), nothing happens.
- Otherwise, outside the WebUI, the missing packages are added to this Python only if pip can do so with every
  installed package held at its version (a constraints file pins them all, so pip's own resolver enforces it).
- In the WebUI (which reinstalls its exact pins at every start and shares one process with every extension),
  or when adding is impossible without a change, the engine gets its own environment:
  `engine-env/<python>-<host id>/`, a venv that sees the host's packages (torch, CUDA libraries) behind its own,
  where pip installs what the engine needs newer. The training and captioning children run there
  (lorascripts/host/engine_env.py); the host's process never imports from it.
- torch, torchvision, torchaudio and xformers are never installed (the host owns them; pip gets them pinned).
- It never raises and never stops the host from starting: a failure is reported with the command that fixes it.
- A run with nothing to do reads package metadata only (no pip, no subprocess) and takes well under a second.
Standard library only (and pip's vendored `packaging`): this file runs before anything else is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"


def _load_engine_env():  # noqa: ANN202 - a module
    """lorascripts/host/engine_env.py by path: importing the package would need what is not installed yet."""
    path = HERE / "lorascripts" / "host" / "engine_env.py"
    spec = importlib.util.spec_from_file_location("lora_scripts_engine_env", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


ee = _load_engine_env()


def say(text: str) -> None:
    print(f"[lora-scripts] {text}", flush=True)


def mode() -> str:
    try:
        import launch  # noqa: F401 - only the WebUI has it on sys.path

        return "webui"
    except ImportError:
        # as run, not resolved: a custom_nodes entry may be a link to a clone elsewhere
        return "comfyui-manager" if "custom_nodes" in Path(__file__).absolute().parts else "manual"


def _index_args() -> list[str]:
    """The WebUI's own package index when it sets one (launch.index_url, from INDEX_URL)."""
    launch = sys.modules.get("launch")
    url = getattr(launch, "index_url", "") if launch else ""
    return ["--index-url", url] if url else []


def _constraints(pins: dict[str, str]) -> Path:
    fd, path = tempfile.mkstemp(prefix="lora-scripts-constraints-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    return Path(path)


def _pip(python: str, lines: list[str], pins: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m pip install lines` with `pins` as constraints (one resolution: all or nothing)."""
    constraints = _constraints(pins)
    try:
        cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", *lines, "-c", str(constraints)]
        return subprocess.run(cmd + _index_args(), capture_output=True, text=True)
    finally:
        constraints.unlink(missing_ok=True)


def _tail(done: subprocess.CompletedProcess, lines: int = 6) -> str:
    return "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-lines:])


def add_to_host(lines: list[str], host: dict) -> bool:
    """Install the missing requirements into this Python with every installed package pinned; True if done."""
    pins = {name: dist.version for name, dist in host.items()}
    say(f"adding {len(lines)} missing package(s) to this Python, holding every installed one at its version")
    done = _pip(sys.executable, lines, pins)
    if done.returncode == 0:
        return True
    say(f"that would change packages this Python already has, so it was not done:\n{_tail(done)}")
    return False


def _host_owned_pins(host: dict) -> dict[str, str]:
    return {name: host[name].version for name in sorted(ee.HOST_OWNED) if name in host}


def _make_venv(env: Path) -> None:
    """A venv for the engine whose site-packages is searched before the host's (a .pth file adds those)."""
    if not ee.env_python(env).is_file():
        env.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "venv", str(env)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"could not create {env} ({_tail(done)}); on Debian/Ubuntu install the python3-venv package"
            )
    site = ee.env_site_packages(env)
    site.mkdir(parents=True, exist_ok=True)
    (site / ee.HOST_PTH_NAME).write_text("\n".join(ee.host_site_dirs()) + "\n", encoding="utf-8")


def build_engine_env(env: Path, lines: list[str], host: dict, text: str) -> bool:
    """Create or repair the engine environment; True when it is complete."""
    started = time.perf_counter()
    (env / ee.RECORD_NAME).unlink(missing_ok=True)  # not ready until everything below succeeded
    say(f"setting up the engine's own environment in {env} (the host's packages stay as they are)")
    _make_venv(env)
    python = str(ee.env_python(env))
    done = _pip(python, lines, _host_owned_pins(host))
    if done.returncode != 0:
        say(
            f"could not install the engine's packages:\n{_tail(done)}\n"
            f'  fix: run  "{python}" -m pip install -r "{REQUIREMENTS}"  and read its message, then start again'
        )
        return False
    check = subprocess.run(
        [python, "-m", "lorascripts", "doctor", "--quiet"], cwd=str(HERE), capture_output=True, text=True
    )
    if check.returncode != 0:
        say(f"the engine environment was installed but does not work:\n{_tail(check, 12)}")
        return False
    record = {
        "requirements": ee.requirements_digest(text),
        "host_python": sys.executable,
        "host_site": ee.host_site_dirs(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (env / ee.RECORD_NAME).write_text(json.dumps(record, indent=1), encoding="utf-8")
    say(f"engine environment ready in {time.perf_counter() - started:.0f} s: {env}")
    return True


def engine_env_current(env: Path, lines: list[str], text: str) -> bool:
    """The engine environment exists, was built for this requirements.txt, and still meets it (the host may
    have changed packages it borrows since)."""
    record = ee.read_record(env)
    if record is None or record.get("requirements") != ee.requirements_digest(text):
        return False
    view = ee.visible_distributions([str(ee.env_site_packages(env)), *ee.host_site_dirs()])
    return "torch" in view and not ee.unmet_requirements(lines, view)


def run(where: str) -> None:
    text = REQUIREMENTS.read_text(encoding="utf-8")
    lines = ee.read_requirement_lines(REQUIREMENTS)
    env = ee.env_dir(HERE)
    if ee.read_record(env) is not None:
        if not engine_env_current(env, lines, text):
            build_engine_env(env, lines, ee.visible_distributions(), text)
        return
    host = ee.visible_distributions()
    unmet = ee.unmet_requirements(lines, host)
    if not unmet:
        if where == "manual":
            say("this Python already has everything lora-scripts needs")
        return
    if "torch" not in host:
        # peft, accelerate and lycoris depend on torch: pip would fetch a multi-GB build that may not match
        # this machine's GPU. The host (or the user) installs torch; we only add our packages.
        say(
            "torch is not installed in this Python, so nothing was installed. Install the torch build for your "
            "GPU first (https://pytorch.org/get-started/locally/), then run install.py again."
        )
        return
    say(f"{where}: {len(unmet)} requirement(s) not met here: " + "; ".join(str(u) for u in unmet[:6]))
    if where != "webui" and all(u.have is None for u in unmet):
        if add_to_host([u.requirement for u in unmet if u.needed_by == "lora-scripts"] or lines, host):
            if not ee.unmet_requirements(lines, ee.visible_distributions()):
                say(f"{where}: installed the missing packages into this Python")
                return
    build_engine_env(env, lines, host, text)


def main() -> int:
    started = time.perf_counter()
    where = mode()
    try:
        run(where)
    except Exception as exc:  # never stop the host from starting
        say(f"install.py failed ({type(exc).__name__}: {exc}); run it by hand to see more: python install.py")
    if where == "manual":
        say(f"done in {time.perf_counter() - started:.2f} s")
    return 0


def remove_engine_env() -> None:
    """`python install.py --remove-engine-env`: delete every engine environment of this extension."""
    shutil.rmtree(HERE / ee.ENV_FOLDER, ignore_errors=True)
    say(f"removed {HERE / ee.ENV_FOLDER}")


if __name__ == "__main__":  # the WebUI and ComfyUI-Manager both run it as a script, with the host's Python
    if "--remove-engine-env" in sys.argv[1:]:
        remove_engine_env()
        sys.exit(0)
    sys.exit(main())
