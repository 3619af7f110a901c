"""Contender "reference": bench/reference_loop.py (plain diffusers + peft, fp32) in its own process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lorascripts.train.events import read_events

from .measure import REPO, RunResult, child_env, log_tail, run_child
from .workloads import Workload, diffusers_folder, image_set


def run_reference(w: Workload, work: Path, timeout: float = 1800) -> RunResult:
    """One run of the reference loop on the workload's diffusers folder and image set."""
    work.mkdir(parents=True, exist_ok=True)
    events_path, log = work / "events.jsonl", work / "reference.log"
    events_path.unlink(missing_ok=True)
    args = [
        sys.executable,
        str(REPO / "bench" / "reference_loop.py"),
        "--model",
        str(diffusers_folder(w.model)),
    ]
    args += ["--data", str(image_set(w.resolution)), "--resolution", str(w.resolution)]
    args += ["--batch", str(w.batch), "--rank", str(w.rank), "--steps", str(w.steps)]
    args += ["--lr", str(w.learning_rate), "--events", str(events_path)]
    launched = time.time()
    code, rss, vram = run_child(args, log, timeout, child_env())
    events = read_events(events_path)
    steps = [(int(e["step"]), float(e["time"])) for e in events if e.get("event") == "step"]
    started = next((e for e in events if e.get("event") == "started"), {})
    result = RunResult(
        contender="reference",
        workload=w.name,
        launched_at=launched,
        step_times=steps,
        batch=w.batch,
        warmup=w.warmup,
        peak_rss_bytes=rss,
        peak_vram_bytes=vram,
        dtype="fp32",
        extra={"lora_modules": started.get("modules")},
    )
    if code != 0 or len(steps) < w.steps:
        result.error = f"exit code {code}, {len(steps)}/{w.steps} steps:\n{log_tail(log)}"
    return result
