"""Resumable training checkpoints, stored only as safetensors + JSON (never pickles).

A checkpoint is a folder `<output_dir>/checkpoints/step-00000120/` with
- `network.safetensors`: the LoRA weights in full precision (kohya names),
- `optimizer.safetensors`: every tensor of the optimizer state, keyed `state.<param index>.<name>`,
- `state.json`: step, epoch, position in the epoch, scheduler state, optimizer scalars and param groups.
It is written to a temporary folder, flushed to disk and renamed into place, so a crash never leaves a half
checkpoint (tests/test_crashes.py kills runs at random points and in the middle of saves).
torch.save / accelerate.save_state are not used because they pickle; hand-writing this small format is the
price of loading nothing but tensors and JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from ..errors import TrainingError
from ..fileio import clean_partial_files, fsync_dir, write_synced

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
TMP_PREFIX = ".tmp-"
NETWORK_FILE, OPTIMIZER_FILE, STATE_FILE = "network.safetensors", "optimizer.safetensors", "state.json"
STATE_VERSION = 1


@dataclass
class Progress:
    """Where training is: counts optimizer steps; `position` is the next batch index inside `epoch`."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    base_steps: int = 0  # steps already trained into an initial LoRA (incremental training)
    base_epochs: int = 0

    @property
    def epochs_reached(self) -> int:
        """The 1-based epoch the last step belongs to (kohya's `ss_epoch`); 0 before the first step."""
        return self.epoch + (1 if self.position else 0)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = tensor
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    output_dir: Path,
    progress: Progress,
    network_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete resumable checkpoint atomically and return its folder.

    Every file is written into `.tmp-XXXX/` and flushed to disk, then the folder is renamed to `step-N`: a
    checkpoint exists only once it is whole. A full disk raises StorageError and leaves older checkpoints."""
    root = output_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{progress.step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=TMP_PREFIX))
    try:
        network = {k: v.detach().to("cpu").contiguous() for k, v in network_state.items()}
        write_synced(tmp / NETWORK_FILE, save(network), final / NETWORK_FILE)
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        write_synced(tmp / OPTIMIZER_FILE, save(opt_tensors), final / OPTIMIZER_FILE)
        state = {
            "version": STATE_VERSION,
            "progress": asdict(progress),
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "extra": extra or {},
        }
        write_synced(
            tmp / STATE_FILE, json.dumps(state, indent=1).encode("utf-8"), final / STATE_FILE
        )  # last: marks it whole
        fsync_dir(tmp)
        if final.exists():  # a re-save of the same step: move the old one aside first, never half-delete it
            _discard(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    return final


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder so that no half of it ever looks like a checkpoint: rename, then remove."""
    aside = folder.with_name(f"{TMP_PREFIX}old-{folder.name}")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders of a crashed save are ignored)."""
    root = output_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if _STEP_DIR.match(p.name)
        and all((p / f).is_file() for f in (STATE_FILE, NETWORK_FILE, OPTIMIZER_FILE))
    ]
    return sorted(found, key=lambda p: p.name)


def clean_partial(output_dir: Path) -> list[Path]:
    """Remove what saves that were killed left behind: `.tmp-*` checkpoint folders and `.partial` files of
    atomic writes in the output folder. Called at every start; returns what it removed."""
    removed: list[Path] = []
    root = output_dir / CHECKPOINT_DIR
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    removed += clean_partial_files(output_dir)
    for p in output_dir.glob(".*.tmp"):  # older versions' temporary names
        p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        logger.info(
            "removed %d leftover(s) of an interrupted save: %s", len(removed), [p.name for p in removed]
        )
    return removed


def load_checkpoint(
    path: Path,
) -> tuple[Progress, dict[str, torch.Tensor], dict[str, Any], dict[str, Any], dict]:
    """Read a checkpoint folder: progress, network weights, optimizer state dict, scheduler state, extra."""
    from safetensors import SafetensorError

    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        network = load_file(str(path / NETWORK_FILE))
        opt_tensors = load_file(str(path / OPTIMIZER_FILE))
    except (OSError, ValueError, SafetensorError) as exc:
        raise TrainingError(
            f"checkpoint {path} is unreadable ({exc}). Delete it to resume from an older one."
        ) from None
    if state.get("version") != STATE_VERSION:
        raise TrainingError(
            f"checkpoint {path} has format version {state.get('version')}; expected {STATE_VERSION}."
        )
    progress = Progress(**state["progress"])
    optimizer = _unflatten_optimizer(opt_tensors, state["optimizer"])
    return progress, network, optimizer, state["scheduler"], state.get("extra", {})


def prune_checkpoints(output_dir: Path, keep_last_n: int) -> None:
    """Keep only the newest `keep_last_n` checkpoint folders (0 keeps all)."""
    if keep_last_n <= 0:
        return
    for old in list_checkpoints(output_dir)[:-keep_last_n]:
        _discard(old)
        logger.info("removed old checkpoint %s", old.name)
