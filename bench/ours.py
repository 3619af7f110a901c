"""Contender "ours": lora-scripts as a user runs it (`python train.py --config run.yaml`), default speed settings.

Only what the workload fixes is set (model, data, resolution, rank, batch, steps, learning rate); precision stays
`auto` (bf16 where the CPU has it), latents are cached (the default), text-encoder outputs are cached in memory
(the text encoder is not trained: ComfyUI's trainer cannot train it, so no contender does). Step times come from
the run's events.jsonl (`log_every_n_steps: 1` gives one step event per step).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from .dit_models import DIT_MODELS
from .measure import REPO, RunResult, run_trainer
from .workloads import Workload, checkpoint_file, image_set, model_tokenizer

DIT_FAMILIES = {m.family for m in DIT_MODELS.values()}


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
    tokenizer = model_tokenizer(w.model)
    if tokenizer is not None:
        cfg["tokenizer_path"] = str(tokenizer)
    if w.family in DIT_FAMILIES:
        cfg["timestep_sampling"] = "sigmoid"  # as the reference loop draws them (same work either way)
    if w.text_length:
        cfg["text_max_length"] = w.text_length
    if w.gradient_checkpointing:
        cfg["gradient_checkpointing"] = True
    cfg.update(w.settings)
    return cfg


def run_ours(w: Workload, work: Path, timeout: float = 1800) -> RunResult:
    """One training process; timings from its events, peak memory from the kernel."""
    out = work / "out"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "run.yaml"
    config.write_text(yaml.safe_dump(train_config(w, out), sort_keys=False), encoding="utf-8")
    args = [sys.executable, str(REPO / "train.py"), "--config", str(config)]
    result, first = run_trainer("ours", w, args, out / "events.jsonl", work / "train.log", timeout)
    started = first.get("started", {})
    result.dtype = {"bf16": "bf16", "fp16": "fp16"}.get(started.get("precision", "no"), "fp32")
    result.extra = {
        "estimate": first.get("estimate"),
        "loop_started_s": started["time"] - result.launched_at if started else None,
        "lora_modules": started.get("modules"),
    }
    return result
