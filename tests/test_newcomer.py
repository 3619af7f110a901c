"""A newcomer's first hour, as the README walks it: on a fresh copy of the repository, from a folder outside it,
with an empty Hugging Face cache, no network, and a Python that has the requirements but not lora-scripts
installed (no `pip install -e .`: site-packages only, without the editable install's .pth hook). Every
documented command runs, prints no traceback and none of the library noise a user cannot act on.

The quickstart runs `dev.sh quickstart`'s two commands (checked against dev.sh) with fewer steps; the grid is
drawn from an overridden output_dir (`--set` on both); captioning uses a tiny WD14 tagger built here.
"""

from __future__ import annotations

import csv
import os
import shutil
import site
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers_train import make_dataset
from tiny_captioners import build_tiny_wd14

REPO = Path(__file__).resolve().parent.parent
# what a user cannot act on, and what means a bug
NOISE = (
    "Traceback",
    "internal error",
    "Casting directly with `to()`",
    "requires torchvision",
    "ModuleNotFoundError",
)


def _fresh_copy(dest: Path) -> Path:
    """The files a clone of this working tree holds (tracked and new, not ignored): no .venv, no caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _python(home: Path) -> tuple[list[str], dict[str, str]]:
    """This interpreter without `site` (so no .pth file adds an installed lora-scripts), its packages on the
    path; a fresh HF_HOME, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
    env.update(PYTHONPATH=os.pathsep.join(site.getsitepackages()), HF_HOME=str(home), HF_HUB_OFFLINE="1")
    return [sys.executable, "-S"], env


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("newcomer")
    clone = _fresh_copy(root / "lora-scripts")
    away = root / "my-projects"
    away.mkdir()
    python, env = _python(root / "hf_home")
    return {"clone": clone, "away": away, "python": python, "env": env, "root": root}


def _run(n: dict, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*n["python"], *args],
        cwd=cwd or n["away"],
        env=n["env"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    noise = [s for s in NOISE if s in result.stderr or s in result.stdout]
    assert result.returncode in (0, 2) and not noise, (
        f"{args}: exit {result.returncode}, {noise}\n{result.stderr[-3000:]}"
    )
    return result


def test_the_package_is_not_installed_for_this_python(newcomer) -> None:
    found = subprocess.run(
        [*newcomer["python"], "-c", "import lorascripts"],
        env=newcomer["env"],
        cwd=newcomer["away"],
        capture_output=True,
    )
    assert found.returncode != 0 and b"No module named 'lorascripts'" in found.stderr


def test_quickstart_caption_check_and_toolbox_from_outside_the_repository(newcomer) -> None:
    n, clone = newcomer, newcomer["clone"]
    dev = (clone / "dev.sh").read_text(encoding="utf-8")
    config = clone / "configs" / "quickstart.yaml"
    assert "python train.py --config configs/quickstart.yaml" in dev
    assert "python tools/quickstart_grid.py --config configs/quickstart.yaml" in dev
    sets = ["--set", "output_dir=runs/qs", "--set", "max_train_steps=8", "--set", "sample_steps=4"]
    mine = make_dataset(n["away"] / "my_pictures", n=3, size=64)
    (mine / "metadata.csv").unlink()
    tagger = build_tiny_wd14(n["root"] / "wd14")[0]
    with ThreadPoolExecutor(2) as pool:
        trained = pool.submit(_run, n, [str(clone / "train.py"), "--config", str(config), *sets])
        labelled = pool.submit(
            _run,
            n,
            [
                str(clone / "tools/auto_label.py"),
                "--input",
                "my_pictures",
                "--output",
                "my_pictures/metadata.csv",
            ]
            + ["--captioner", "wd14", "--model", str(tagger), "--trigger", "zk"],
        )
        checked = pool.submit(
            _run,
            n,
            [str(clone / "tools/check_dataset.py"), "my_pictures", "--resolution", "64", "--trigger", "zk"],
        )
        trained, labelled = trained.result(), labelled.result()
    lora = n["away"] / "runs" / "qs" / "zkstyle.safetensors"
    assert (
        trained.returncode == 0
        and lora.is_file()
        and f"LoRA written to {Path('runs/qs/zkstyle.safetensors')}" in trained.stdout
    )
    err = trained.stderr
    # the bar's last line comes before the self-test report, not again after it
    assert "every key applies" in err and "training:" not in err[err.index("self-test") :]
    with open(mine / "metadata.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert labelled.returncode == 0 and len(rows) == 3 and all(r["caption"].startswith("zk, ") for r in rows)
    assert checked.result().returncode in (0, 1)  # 1 only when the check finds errors; the report is written
    assert (mine / "dataset_report.html").is_file()
    grid_cmd = [str(clone / "tools/quickstart_grid.py"), "--config", str(config), *sets[:2], "--steps", "1"]
    grid = _run(n, grid_cmd)
    assert grid.returncode == 0 and (n["away"] / "runs" / "qs" / "grid.png").is_file(), grid.stdout
    # the toolbox runs with -m from the repository folder, as the README says
    lora_cmd = ["-m", "lorascripts", "lora"]
    inspected = _run(n, [*lora_cmd, "inspect", str(lora)], cwd=clone)
    assert inspected.returncode == 0 and "zkstyle" in inspected.stdout
    refused = _run(n, [*lora_cmd, "merge", f"{lora}:0.5", "-o", str(lora)], cwd=clone)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
