"""The benchmark suite in one command: every workload x every contender, results as a table and JSON.

    python -m bench.run                       # the default full run (CPU: ~25 min on 2 cores)
    python -m bench.run --quick               # tiny workload, ours + reference loop, a few steps (the test)
    python -m bench.run --workloads sd15-256 --contenders ours,comfyui --repeats 3 --steps 10

Contenders run one after another, each in its own process, repeats interleaved (ours, reference, ComfyUI,
ours, ...) so that a noisy machine slows all of them alike. Writes bench/results/<date>-<host>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from .comfy import run_comfy
from .dit_models import DIT_MODELS
from .measure import RunResult
from .ours import run_ours
from .reference import run_reference
from .report import CONTENDERS, WorkloadInfo, summarise, write
from .report import markdown as to_markdown
from .workloads import WORKLOADS, Workload, checkpoint_file, diffusers_folder

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
RUNNERS = {"ours": run_ours, "reference": run_reference, "comfyui": run_comfy}
NOTES = [
    "s/step and images/s: steady state, from the end of the warm-up steps to the last step; start-up: process "
    "launch (ComfyUI: queueing the prompt on an idle running server) to the end of the first step.",
    "MFU: U-Net LoRA training FLOPs per step (lorascripts.perf.flops, counted once per workload on the meta "
    "device, attention included; frozen VAE / text encoder excluded since their outputs can be cached) / s/step "
    "/ the measured dense-matmul peak of the dtype the contender trains in.",
    "Same model weights, 8 pictures, one caption, resolution, batch, rank (alpha = rank), learning rate and "
    "AdamW for every contender; the text encoder is frozen. Ours: `train.py --config` with default speed "
    "settings (precision auto, latent cache, text-encoder output cache). Reference: diffusers + peft, fp32, "
    "VAE and text encoder every step. ComfyUI: TrainLoraNode, bf16, fp32 LoRA weights, no checkpointing.",
    "Not matched exactly: ComfyUI's trainer adapts every Linear/Conv of the U-Net (and bias/norm offsets), not "
    "kohya's transformer-block set the other two train; it runs fewer steps per run (same work per step); it "
    "cannot load the tiny toy architecture; on a GPU machine it still runs on the CPU (the host helper starts "
    "it with --cpu), so it is skipped there.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="lora-scripts benchmark suite")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma list of ours,reference,comfyui")
    ap.add_argument("--repeats", type=int, help="runs per contender (default: per workload)")
    ap.add_argument("--steps", type=int, help="steps per run of ours / the reference loop")
    ap.add_argument("--comfy-steps", type=int, help="steps per ComfyUI run")
    ap.add_argument("--warmup", type=int, help="steps dropped before the steady-state rate")
    ap.add_argument("--quick", action="store_true", help="tiny-64, ours + reference, 5 steps, one run each")
    ap.add_argument(
        "--dry",
        action="store_true",
        help="prove the command on a CPU: large models replaced by their tiny stand-ins, 64 px, 3 steps",
    )
    ap.add_argument(
        "--peak",
        choices=("measure", "cached"),
        help="the matmul peak of the MFU column: measured at the start (default) or this machine's cached figure "
        "(measured once; the default of --quick and --dry, which prove the command, not the figures)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of the result files")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.quick:
        args.workloads, args.steps, args.warmup = "tiny-64", args.steps or 5, args.warmup or 2
        if args.contenders == ap.get_default("contenders"):
            args.contenders = "ours,reference"
        args.repeats = args.repeats or 1
    if args.peak is None:
        # measuring both dtypes takes 10-20 s on a 2-core CPU (fp32 4096-wide products), longer than the run itself
        args.peak = "cached" if args.quick or args.dry else "measure"
    return args


def chosen_workloads(args: argparse.Namespace) -> list[Workload]:
    out = []
    for name in args.workloads.split(","):
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
        w = WORKLOADS[name]
        overrides = {"steps": args.steps, "comfy_steps": args.comfy_steps, "warmup": args.warmup}
        if args.repeats:
            overrides.update(repeats=args.repeats, comfy_repeats=args.repeats)
        w = replace(w, **{k: v for k, v in overrides.items() if v is not None})
        out.append(dry_stand_in(w) if args.dry else w)
    return out


def dry_stand_in(w: Workload) -> Workload:
    """The workload as `--dry` runs it: the model's tiny stand-in (dit_models.DitModel.dry), 64 px, 3 steps, on
    whatever device there is."""
    model = DIT_MODELS[w.model].dry if w.model in DIT_MODELS else None
    return replace(w, model=model or w.model, resolution=64, steps=3, warmup=1, repeats=1, needs_gpu=False)


def skip_reasons(w: Workload, contenders: list[str]) -> dict[str, str]:
    """Contenders that cannot run this workload on this machine, and why."""
    from lorascripts.config.schema import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    missing = [key for key, _ in w.settings if key not in known]
    if missing:  # a preset whose keys this checkout does not have yet (merged from another branch later)
        return dict.fromkeys(contenders, f"config key {', '.join(missing)} not in this lorascripts")
    cuda = torch.cuda.is_available()
    if w.needs_gpu and not cuda:
        return dict.fromkeys(contenders, "no GPU")
    if w.only:
        return {
            c: f"{w.name} is measured for {', '.join(w.only)} only" for c in contenders if c not in w.only
        }
    if "comfyui" in contenders and cuda:
        return {"comfyui": "GPU machine; the ComfyUI host helper runs it with --cpu"}
    return {}


def flops_per_step(w: Workload) -> float:
    """Model FLOPs of one training step, counted once for the workload (the same for every contender)."""
    from lorascripts.perf.configs import model_shapes
    from lorascripts.perf.flops import train_step_cost

    shapes = model_shapes(str(checkpoint_file(w.model)))
    cost = train_step_cost(
        shapes.family, shapes.denoiser, batch=w.batch, height=w.resolution, width=w.resolution, rank=w.rank
    )
    return cost.flops


def matmul_peaks(refresh: bool = True) -> dict[str, float]:
    """Measured now (`refresh`: not the cached value), so the MFU denominator sees the same machine as the runs;
    else the figure cached for this machine, dtype and thread count (measured on first use)."""
    from lorascripts.perf.peak import matmul_peak

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {name: matmul_peak(dtype, device, refresh=refresh) for name, dtype in DTYPES.items()}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def run_all(
    workloads: list[Workload], contenders: list[str], work: Path, save: Callable[[list, list], None]
) -> None:
    """Every workload, repeats interleaved across contenders; a contender that fails is not repeated.
    `save(infos, runs)` is called after every run, so an interrupted suite still leaves its results."""
    infos: list[WorkloadInfo] = []
    runs: list[RunResult] = []
    for w in workloads:
        skipped = skip_reasons(w, contenders)
        active = [c for c in contenders if c not in skipped]
        if active:  # build the random checkpoint (and its diffusers copy) before any timing starts
            checkpoint_file(w.model)
            if "reference" in active:
                diffusers_folder(w.model)
        infos.append(WorkloadInfo(w.name, {**w.__dict__}, flops_per_step(w) if active else None, skipped))
        failed: set[str] = set()
        for i in range(max(w.repeats, w.comfy_repeats)):
            for c in active:
                if c in failed or i >= (w.comfy_repeats if c == "comfyui" else w.repeats):
                    continue
                began = time.time()
                result = RUNNERS[c](w, work / f"{w.name}-{c}-{i}")
                runs.append(result)
                status = (
                    result.error.splitlines()[0] if result.error else f"{result.seconds_per_step:.3f} s/step"
                )
                print(f"[bench] {w.name} {c} run {i + 1}: {status} ({time.time() - began:.0f} s)", flush=True)
                if result.error:
                    failed.add(c)
                save(infos, runs)
        save(infos, runs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    contenders = [c for c in args.contenders.split(",") if c]
    unknown = set(contenders) - set(RUNNERS)
    if unknown:
        raise SystemExit(
            f"unknown contender(s) {', '.join(sorted(unknown))}; choose from {', '.join(RUNNERS)}"
        )
    workloads = chosen_workloads(args)
    started = time.time()
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    }
    result["machine"] = machine()
    result["matmul_peak"] = matmul_peaks(refresh=args.peak == "measure")
    stem = f"{result['date'][:10]}-{result['machine']['host']}" + ("-quick" if args.quick else "")
    paths: list[Path] = []

    def save(infos: list[WorkloadInfo], runs: list[RunResult]) -> None:
        result["machine"]["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        result.update(summarise(infos, runs, result["matmul_peak"], contenders))
        result["workloads"] = [info.__dict__ for info in infos]
        result["runs"] = [r.to_json() for r in runs]
        result["notes"] = NOTES
        result["wall_s"] = time.time() - started
        paths[:] = write(result, args.out, stem)

    with tempfile.TemporaryDirectory(prefix="lorascripts-bench-") as tmp:
        run_all(workloads, contenders, args.work or Path(tmp), save)
    json_path, md_path = paths
    print(to_markdown(result))
    print(f"[bench] {time.time() - started:.0f} s; wrote {md_path} and {json_path}")
    return result


if __name__ == "__main__":
    main()
