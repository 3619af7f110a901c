"""Contender "ours": lora-scripts as a user runs it (`python train.py --config run.yaml`), default speed settings.

Only what the workload fixes is set (model, data, resolution, rank, batch, steps, learning rate); precision stays
`auto` (bf16 where the CPU has it), latents are cached (the default), text-encoder outputs are cached in memory
(the text encoder is not trained: ComfyUI's trainer cannot train it, so no contender does). Step times come from
the run's events.jsonl (`log_every_n_steps: 1` gives one step event per step).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import yaml

from lorascripts.train.events import read_events

from .measure import REPO, RunResult, child_env, log_tail, run_child
from .workloads import Workload, checkpoint_file, image_set, tokenizer_dir


def train_config(w: Workload, out: Path) -> dict[str, Any]:
    """The YAML the user would write for this workload."""
    cfg: dict[str, Any] = {
        "base_model": "toy" if w.model == "toy" else str(checkpoint_file(w.model)),
        "train_data_dir": str(image_set(w.resolution)),
        "output_dir": str(out),
        "output_name": "bench",
        "resolution": w.resolution,
        "enable_bucket": False,
        "lora_rank": w.rank,
        "lora_alpha": w.rank,
        "batch_size": w.batch,
        "max_train_steps": w.steps,
        "learning_rate": w.learning_rate,
        "train_text_encoder": False,
        "cache_text_encoder_outputs": "memory",
        "log_every_n_steps": 1,
        "dataset_checks": "warn",  # 8 pictures with one shared caption: checks would only warn about that
    }
    if w.model != "toy":
        cfg["tokenizer_path"] = str(tokenizer_dir())
    return cfg


def run_ours(w: Workload, work: Path, timeout: float = 1800) -> RunResult:
    """One training process; timings from its events, peak memory from the kernel."""
    out = work / "out"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "run.yaml"
    config.write_text(yaml.safe_dump(train_config(w, out), sort_keys=False), encoding="utf-8")
    log = work / "train.log"
    launched = time.time()
    code, rss, vram = run_child(
        [sys.executable, str(REPO / "train.py"), "--config", str(config)], log, timeout, child_env()
    )
    events = read_events(out / "events.jsonl")
    steps = [(int(e["step"]), float(e["time"])) for e in events if e.get("event") == "step"]
    started = next((e for e in events if e.get("event") == "started"), {})
    estimate = next((e for e in events if e.get("event") == "estimate"), None)
    result = RunResult(
        contender="ours",
        workload=w.name,
        launched_at=launched,
        step_times=steps,
        batch=w.batch,
        warmup=w.warmup,
        peak_rss_bytes=rss,
        peak_vram_bytes=vram,
        dtype={"bf16": "bf16", "fp16": "fp16"}.get(started.get("precision", "no"), "fp32"),
        extra={
            "estimate": estimate,
            "loop_started_s": started.get("time", launched) - launched,
            "lora_modules": started.get("modules"),
        },
    )
    if code != 0 or len(steps) < w.steps:
        result.error = f"exit code {code}, {len(steps)}/{w.steps} steps:\n{log_tail(log)}"
    return result
