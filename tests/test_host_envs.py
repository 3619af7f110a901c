"""The extension in environments pinned like the real hosts' (tests/host_envs.py), installed as a user would:
the host's packages keep their exact versions, the host still imports, install.py's second run does nothing,
and the training a door starts finishes in the engine's Python with the card and key check. Plus the declared
floors of requirements.txt, installed together, pass the engine's smoke test and train."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from comfy_host import REPO
from helpers_train import make_dataset
from host_envs import comfyui_pins, floor_pins, pinned_python
from packaging.requirements import Requirement
from packaging.version import Version
from webui_host import webui_pins

STANDIN = Path(__file__).resolve().parent / "webui_standin"
DRIVER = Path(__file__).resolve().parent / "pinned_host_driver.py"
ARTIFACTS = REPO / ".cache" / "test-artifacts"
pytestmark = pytest.mark.slow


def versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json; seen = {}; "
        "[seen.setdefault(d.metadata['Name'].lower().replace('_', '-'), d.version) for d in m.distributions()]; "
        "print(json.dumps(seen))"
    )
    return json.loads(
        subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout
    )


def held(pins: list[str], installed: dict[str, str]) -> list[str]:
    """Pins (or bounds) the installed versions break."""
    broken = []
    for line in pins:
        req = Requirement(line)
        have = installed.get(req.name.lower().replace("_", "-"))
        if have is None or (req.specifier and not req.specifier.contains(Version(have), prereleases=True)):
            broken.append(f"{line} (installed: {have})")
    return broken


def run_install(python: Path, webui: bool, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    script = REPO / "install.py"
    if webui:  # the WebUI runs it with its root (where `launch` lives) on PYTHONPATH
        env["PYTHONPATH"] = str(STANDIN)
    else:  # ComfyUI-Manager runs custom_nodes/<name>/install.py (here a link to this checkout)
        link = cwd / "custom_nodes" / "lora-scripts"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(REPO, target_is_directory=True)
        script = link / "install.py"
    started = time.perf_counter()
    done = subprocess.run([str(python), str(script)], cwd=str(cwd), env=env, capture_output=True, text=True)
    return done, time.perf_counter() - started


def drive(python: Path, kind: str, root: Path, model, data: Path, name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["WEBUI_STANDIN_ROOT"] = str(root)
    checkpoint = model.single_file.name if kind == "webui" else str(model.single_file)
    args = [str(python), str(DRIVER), kind, str(root), checkpoint, str(model.tokenizer_dir), str(data), name]
    done = subprocess.run(args, cwd=str(root), env=env, capture_output=True, text=True, timeout=1200)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def tiny_config(tmp_path: Path, model, **keys: object) -> Path:
    """A config file for a few steps of the tiny model on a 2-image dataset."""
    config = {
        "base_model": str(model.single_file),
        "tokenizer_path": str(model.tokenizer_dir),
        "train_data_dir": str(make_dataset(tmp_path / "data", n=2)),
        "output_dir": str(tmp_path / "out"),
        "resolution": 32,
        "bucket_reso_steps": 8,
        "min_bucket_reso": 16,
        "mixed_precision": "no",
        "dataset_checks": "warn",
        **keys,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def readme_command_lines(python: Path, tmp_path: Path, model, data: Path) -> None:
    """check_dataset and train.py as the README types them, with the host's Python from the extension folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    config = tiny_config(tmp_path / "cli", model, max_train_steps=1, output_name="cli")
    for args in (["tools/check_dataset.py", str(data)], ["train.py", "--config", str(config)]):
        done = subprocess.run([str(python), *args], cwd=str(REPO), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "cli" / "out" / "cli.safetensors").is_file()


def webui_root(tmp_path: Path, model) -> Path:
    root = tmp_path / "webui"
    folder = root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    shutil.copyfile(model.single_file, folder / model.single_file.name)
    shutil.copytree(model.tokenizer_dir, folder / "tokenizer")
    return root


def install_twice(python: Path, webui: bool, cwd: Path, label: str) -> str:
    """install.py as the host runs it at two starts; returns the engine's Python it settled on."""
    first, _ = run_install(python, webui, cwd)
    assert first.returncode == 0 and "Traceback" not in first.stdout + first.stderr, first.stdout
    assert "could not" not in first.stdout and "does not work" not in first.stdout, first.stdout
    second, seconds = run_install(python, webui, cwd)
    assert second.returncode == 0 and second.stdout.strip() == "", (
        second.stdout
    )  # nothing to do, nothing said
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"install-second-start-{label}.txt").write_text(
        f"{seconds:.3f} s for install.py at a second start\n{first.stdout}"
    )
    code = "from lorascripts.host.engine_env import engine_python; print(engine_python())"
    return subprocess.run(
        [str(python), "-c", code], cwd=str(REPO), capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize("host", ["a1111-1.10.1", "forge-gradio4"])
def test_webui_pins_hold_and_the_tab_trains_in_the_engine_env(host, tiny_sd1, tmp_path):
    pins = webui_pins(host)
    python = pinned_python(f"venv-{host}", pins)
    before = versions(python)
    assert held(pins, before) == []

    engine = install_twice(python, webui=True, cwd=tmp_path, label=host)
    assert versions(python) == before  # not one package of the host moved
    assert held(pins, versions(python)) == []
    code = "import gradio, fastapi, pydantic; print(gradio.__version__, pydantic.VERSION)"
    imported = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr[-2000:]
    if host == "a1111-1.10.1":
        assert imported.stdout.split()[1].startswith("1.")  # gradio 3.41 / fastapi 0.94 need pydantic 1
    assert engine != str(python) and "engine-env" in engine

    data = make_dataset(tmp_path / "data", n=2)
    outcome = drive(python, "webui", webui_root(tmp_path, tiny_sd1), tiny_sd1, data, "pinned")
    assert outcome["state"] == "finished", outcome["message"]
    assert "WebUI key check passed" in outcome["message"]
    assert outcome["engine_python"] == engine and outcome["host_imported"] == []  # the tab stayed light
    lora = tmp_path / "webui" / "models" / "Lora" / "pinned.safetensors"
    card = json.loads(lora.with_suffix(".json").read_text())
    assert lora.is_file() and card["activation text"] == "zk" and card["sd version"] == "SD1"

    # the README's command lines, typed with the WebUI's Python from the extension folder, run in the engine env
    readme_command_lines(python, tmp_path, tiny_sd1, data)


def manager_installs(python: Path) -> tuple[dict[str, str], dict[str, str]]:
    """ComfyUI-Manager's step: `pip install <line>` for each line of our requirements.txt, into ComfyUI's
    Python; returns the versions before and after (recorded once per environment)."""
    record = python.parent.parent / "manager-step.json"
    digest = (REPO / "requirements.txt").read_text()
    if record.is_file() and json.loads(record.read_text())["requirements"] == digest:
        saved = json.loads(record.read_text())
        return saved["before"], saved["after"]
    before = versions(python)
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            subprocess.run([str(python), "-m", "pip", "install", "-q", line], check=True)
    after = versions(python)
    record.write_text(json.dumps({"requirements": digest, "before": before, "after": after}))
    return before, after


def test_comfyui_pins_hold_and_training_runs(tiny_sd1, tmp_path):
    pins = comfyui_pins()
    python = pinned_python("venv-comfyui-0.3.75", pins)
    before, after = manager_installs(python)
    assert held(pins, after) == []  # every bound ComfyUI declares still holds
    downgraded = [n for n, v in before.items() if n in after and Version(after[n]) < Version(v)]
    assert downgraded == []  # no package another node (or ComfyUI) installed went back
    engine = install_twice(python, webui=False, cwd=tmp_path, label="comfyui-0.3.75")
    assert engine == str(python)  # everything fits ComfyUI's environment: no second one
    assert versions(python) == after

    data = make_dataset(tmp_path / "data", n=2)
    outcome = drive(python, "comfy", tmp_path, tiny_sd1, data, "pinned")
    assert outcome["state"] == "finished" and Path(outcome["lora"]).is_file()
    assert outcome["compat"]["ok"] is True, outcome["compat"]
    # the README's command lines, typed with ComfyUI's Python from the custom node's folder
    readme_command_lines(python, tmp_path, tiny_sd1, data)


def test_declared_floors_install_together_and_train(tiny_sd1, tmp_path):
    pins = floor_pins()
    python = pinned_python("venv-floors", pins, see_this_venv=True)
    installed = versions(python)
    for line in pins:  # the floors themselves, not something newer, are what the venv imports
        req = Requirement(line)
        have = Version(installed[req.name.lower().replace("_", "-")])
        assert have == Version(next(iter(req.specifier)).version), line
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(REPO)
    doctor = subprocess.run(
        [str(python), "-m", "lorascripts", "doctor"], env=env, capture_output=True, text=True
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr

    config = tiny_config(tmp_path, tiny_sd1, max_train_steps=2, output_name="floors")
    done = subprocess.run(
        [str(python), "-m", "lorascripts", "train", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "out" / "floors.safetensors").is_file()


def test_doctor_catches_a_diffusers_newer_than_transformers_allows(tiny_sd1, tmp_path):
    """The case that set the transformers floor: diffusers >= 0.39 imports Dinov2WithRegistersConfig, which
    transformers < 4.48 lacks. `doctor` (run by install.py before an engine env counts as ready) must fail on it
    and name the package, as must a training run (never "a bug in lora-scripts")."""
    python = pinned_python(
        "venv-old-transformers", ["transformers==4.46.3", "diffusers>=0.39,<0.40"], see_this_venv=True
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(REPO)
    doctor = subprocess.run(
        [str(python), "-m", "lorascripts", "doctor"], env=env, capture_output=True, text=True
    )
    assert doctor.returncode == 1
    assert (
        "Dinov2WithRegistersConfig" in doctor.stdout
        and "installed transformers does not fit" in doctor.stdout
    )
    declared = next(
        line.split(",")[0]
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.startswith("transformers>=")
    )
    assert declared in doctor.stdout  # the requirement it breaks, with the pip command
    config = tiny_config(tmp_path, tiny_sd1, max_train_steps=1)
    train = subprocess.run(
        [str(python), "-m", "lorascripts", "train", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert train.returncode == 7, train.stderr[-2000:]
    assert "transformers does not fit" in train.stderr and "bug in lora-scripts" not in train.stderr
