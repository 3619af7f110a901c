"""Contender "reference": plain diffusers + peft, fp32, in its own process: bench/reference_loop.py (SD U-Nets)
or bench/reference_dit.py (diffusion transformers, the family's adapter)."""

from __future__ import annotations

import sys
from pathlib import Path

from .dit_models import DIT_MODELS
from .measure import REPO, RunResult, run_trainer
from .workloads import Workload, diffusers_folder, image_set


def run_reference(w: Workload, work: Path, timeout: float = 1800) -> RunResult:
    """One run of the reference loop on the workload's diffusers folder and image set."""
    work.mkdir(parents=True, exist_ok=True)
    events_path, log = work / "events.jsonl", work / "reference.log"
    events_path.unlink(missing_ok=True)
    if w.model in DIT_MODELS:
        args = [sys.executable, "-m", "bench.reference_dit", "--family", str(DIT_MODELS[w.model].reference)]
    else:
        args = [sys.executable, str(REPO / "bench" / "reference_loop.py")]
    args += ["--model", str(diffusers_folder(w.model))]
    args += ["--data", str(image_set(w.resolution)), "--resolution", str(w.resolution)]
    args += ["--batch", str(w.batch), "--rank", str(w.rank), "--steps", str(w.steps)]
    args += ["--lr", str(w.learning_rate), "--events", str(events_path)]
    if w.text_length:
        args += ["--text-length", str(w.text_length)]
    result, first = run_trainer("reference", w, args, events_path, log, timeout)
    result.extra = {"lora_modules": first.get("started", {}).get("modules")}
    return result
