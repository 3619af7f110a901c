"""Resumable training checkpoints, stored only as safetensors + JSON (never pickles).

A checkpoint is a folder `<output_dir>/checkpoints/step-00000120/` with
- `network.safetensors`: the LoRA weights in full precision (kohya names),
- `optimizer.safetensors`: every tensor of the optimizer state, keyed `state.<param index>.<name>`,
- `state.json`: step, epoch, position in the epoch, scheduler state, optimizer scalars and param groups.
It is written to a temporary folder and renamed into place, so a crash never leaves a half checkpoint.
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
from safetensors.torch import load_file, save_file

from ..errors import TrainingError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
STATE_VERSION = 1


@dataclass
class Progress:
    """Where training is: counts optimizer steps; `position` is the next batch index inside `epoch`."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    base_steps: int = 0  # steps already trained into an initial LoRA (incremental training)
    base_epochs: int = 0


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
    """Write a complete resumable checkpoint atomically and return its folder."""
    root = output_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{progress.step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save_file({k: v.contiguous() for k, v in network_state.items()}, str(tmp / "network.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        state = {
            "version": STATE_VERSION,
            "progress": asdict(progress),
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "extra": extra or {},
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders of a crashed save are ignored)."""
    root = output_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def clean_partial(output_dir: Path) -> None:
    """Remove temporary folders/files left by a save that was killed."""
    root = output_dir / CHECKPOINT_DIR
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)
    for p in output_dir.glob(".*.tmp"):
        p.unlink(missing_ok=True)


def load_checkpoint(
    path: Path,
) -> tuple[Progress, dict[str, torch.Tensor], dict[str, Any], dict[str, Any], dict]:
    """Read a checkpoint folder: progress, network weights, optimizer state dict, scheduler state, extra."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        network = load_file(str(path / "network.safetensors"))
        opt_tensors = load_file(str(path / "optimizer.safetensors"))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
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
        shutil.rmtree(old, ignore_errors=True)
        logger.info("removed old checkpoint %s", old.name)
