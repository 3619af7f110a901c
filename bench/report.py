"""From raw runs to the results: per-contender rows, ours/theirs ratios, the estimate check, Markdown and JSON.

Every number in the tables is derived here from the raw step times kept in the JSON (`runs`), so a reader (and
tests/test_bench.py) can recompute them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import RunResult

GIB = 2**30
CONTENDERS = ("ours", "reference", "comfyui")


@dataclass
class WorkloadInfo:
    """A workload's fixed facts: its settings, FLOPs per step (counted once) and why contenders were skipped."""

    name: str
    settings: dict[str, Any]
    flops_per_step: float | None
    skipped: dict[str, str] = field(default_factory=dict)  # contender -> reason


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def contender_row(
    info: WorkloadInfo, contender: str, runs: list[RunResult], peaks: dict[str, float]
) -> dict[str, Any]:
    """Median over the contender's successful runs of one workload (start-up, rate, memory, MFU)."""
    if contender in info.skipped:
        return {
            "workload": info.name,
            "contender": contender,
            "status": f"skipped: {info.skipped[contender]}",
        }
    if not runs:
        return {"workload": info.name, "contender": contender, "status": "not run (yet)"}
    good = [r for r in runs if r.error is None and r.seconds_per_step]
    if not good:
        error = next((r.error for r in runs if r.error), "no steady-state steps")
        return {"workload": info.name, "contender": contender, "status": f"failed: {error.splitlines()[0]}"}
    sps = [r.seconds_per_step for r in good]
    median_sps = statistics.median(sps)
    peak = peaks.get(good[0].dtype)
    rss = [r.peak_rss_bytes for r in good if r.peak_rss_bytes]
    vram = [r.peak_vram_bytes for r in good if r.peak_vram_bytes]
    return {
        "workload": info.name,
        "contender": contender,
        "status": "ok",
        "dtype": good[0].dtype,
        "runs": len(good),
        "steps": len(good[0].step_times),
        "startup_s": statistics.median(r.startup_s for r in good),
        "seconds_per_step": median_sps,
        "seconds_per_step_spread": _spread(sps),
        "images_per_s": good[0].batch / median_sps,
        "peak_rss_bytes": max(rss) if rss else None,
        "peak_vram_bytes": max(vram) if vram else None,
        "mfu": info.flops_per_step / median_sps / peak if info.flops_per_step and peak else None,
    }


def ratios(info: WorkloadInfo, by_contender: dict[str, list[RunResult]]) -> list[dict[str, Any]]:
    """ours / theirs in steps/s over every pair of successful runs (their s/step over ours)."""
    ours = [
        r.seconds_per_step for r in by_contender.get("ours", []) if r.error is None and r.seconds_per_step
    ]
    out = []
    for other in CONTENDERS[1:]:
        theirs = [
            r.seconds_per_step for r in by_contender.get(other, []) if r.error is None and r.seconds_per_step
        ]
        values = [t / o for o in ours for t in theirs]
        if values:
            out.append({"workload": info.name, "versus": other, **(_spread(values) or {})})
    return out


def estimate_check(info: WorkloadInfo, ours: list[RunResult]) -> dict[str, Any] | None:
    """Our pre-flight estimate (the `estimate` event) against what the run measured; error in % of measured."""
    good = [r for r in ours if r.error is None and r.seconds_per_step]
    estimate = next((r.extra.get("estimate") for r in good if r.extra.get("estimate")), None)
    if not good or not estimate:
        return None
    sps = statistics.median(r.seconds_per_step for r in good)
    on_gpu = estimate.get("device", "cpu") != "cpu"
    measured = [r.peak_vram_bytes if on_gpu else r.peak_rss_bytes for r in good]
    peak = max((m for m in measured if m), default=None)
    row = {
        "workload": info.name,
        "memory_kind": "VRAM" if on_gpu else "RSS",
        "estimated_peak_bytes": estimate["peak_memory_bytes"],
        "measured_peak_bytes": peak,
        "estimated_seconds_per_step": estimate["seconds_per_step"],
        "measured_seconds_per_step": sps,
        "suggestion": estimate.get("suggestion"),
    }
    row["peak_error_pct"] = 100 * (row["estimated_peak_bytes"] / peak - 1) if peak else None
    row["step_error_pct"] = 100 * (row["estimated_seconds_per_step"] / sps - 1)
    return row


def summarise(
    infos: list[WorkloadInfo], runs: list[RunResult], peaks: dict[str, float], contenders: list[str]
) -> dict[str, Any]:
    """Rows, ratios and estimate checks for every workload."""
    rows, ratio_rows, estimates = [], [], []
    for info in infos:
        mine = [r for r in runs if r.workload == info.name]
        by = {c: [r for r in mine if r.contender == c] for c in contenders}
        rows += [contender_row(info, c, by[c], peaks) for c in contenders]
        ratio_rows += ratios(info, by)
        check = estimate_check(info, by.get("ours", []))
        if check:
            estimates.append(check)
    return {"rows": rows, "ratios": ratio_rows, "estimates": estimates}


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _gib(value: int | None) -> str:
    return "–" if not value else f"{value / GIB:.2f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0f}%"


def markdown(result: dict[str, Any]) -> str:
    """The tables as Markdown: contenders, ratios, estimate check, then the machine and the notes."""
    m = result["machine"]
    lines = [
        f"# Benchmark {result['date']} on {m['host']}",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']:.0f} GiB, torch {m['torch']} ({m['threads']} threads)"
        f", GPU: {m['gpu'] or 'none'}; load average at start {m['load_start']}, at end {m.get('load_end', '?')}.",
        "Measured matmul peak: "
        + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in result["matmul_peak"].items())
        + ".",
        "",
        "| workload | contender | dtype | start-up s | s/step (min–max) | images/s | peak RSS GiB | peak VRAM GiB "
        "| MFU | runs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['workload']} | {row['contender']} | {row['status']} | | | | | | | |")
            continue
        spread = row["seconds_per_step_spread"]
        lines.append(
            f"| {row['workload']} | {row['contender']} | {row['dtype']} | {_num(row['startup_s'], '{:.1f}')} "
            f"| {_num(row['seconds_per_step'])} ({spread['min']:.2f}–{spread['max']:.2f}) "
            f"| {_num(row['images_per_s'])} | {_gib(row['peak_rss_bytes'])} | {_gib(row['peak_vram_bytes'])} "
            f"| {_num(row['mfu'] and 100 * row['mfu'], '{:.1f}%')} | {row['runs']} |"
        )
    lines += ["", "Ours / theirs, steps per second (every pair of runs):", ""]
    lines += ["| workload | versus | min | median | max | pairs |", "|---|---|---:|---:|---:|---:|"]
    for r in result["ratios"]:
        lines.append(
            f"| {r['workload']} | {r['versus']} | {r['min']:.2f}× | {r['median']:.2f}× | {r['max']:.2f}× "
            f"| {r['n']} |"
        )
    lines += ["", "Pre-flight estimate (printed before the model loads) against the measured run:", ""]
    lines += [
        "| workload | peak est. GiB | measured GiB | error | s/step est. | measured | error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in result["estimates"]:
        lines.append(
            f"| {e['workload']} | {_gib(e['estimated_peak_bytes'])} | {_gib(e['measured_peak_bytes'])} "
            f"({e['memory_kind']}) | {_pct(e['peak_error_pct'])} | {e['estimated_seconds_per_step']:.2f} "
            f"| {e['measured_seconds_per_step']:.2f} | {_pct(e['step_error_pct'])} |"
        )
    lines += ["", *[f"- {note}" for note in result["notes"]], ""]
    return "\n".join(lines)


def write(result: dict[str, Any], folder: Path, stem: str) -> tuple[Path, Path]:
    """bench/results/<stem>.json and .md."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    md_path.write_text(markdown(result), encoding="utf-8")
    return json_path, md_path
