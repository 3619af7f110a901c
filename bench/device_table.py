"""The compact table a device run ends with: one line per workload from the result files under a folder, and
the FLUX.1 memory goal checked (fp8 + block swap within 12 GiB at most 1.5x the s/step of the 24 GB setting).

    python -m bench.device_table OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

GIB = 2**30
# the FLUX.1 goal: the 12 GB preset against the 24 GB one (bench/workloads.py FLUX_PRESETS)
LOW, HIGH, VRAM_GOAL_GIB, SLOWDOWN_GOAL = "flux-1024-fp8-swap16", "flux-1024-fp8", 12.0, 1.5


def rows(folder: Path) -> list[dict[str, Any]]:
    """The `ours` rows of every result JSON under `folder` (newest file last wins per workload)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        settings = {w["name"]: w["settings"] for w in result.get("workloads", [])}
        for row in result.get("rows", []) if isinstance(result, dict) else []:
            if row.get("contender") == "ours":
                found[row["workload"]] = {**row, "settings": settings.get(row["workload"], {})}
    return list(found.values())


def _preset(settings: dict[str, Any]) -> str:
    keys = dict(settings.get("settings") or ())
    if settings.get("gradient_checkpointing"):
        keys["gradient_checkpointing"] = True
    return ", ".join(f"{k}={v}" for k, v in keys.items()) or "defaults"


def goal_lines(by_name: dict[str, dict[str, Any]]) -> list[str]:
    """The FLUX.1 memory goal, or why it cannot be judged from these rows."""
    low, high = by_name.get(LOW), by_name.get(HIGH)
    if not (low and high and low["status"] == "ok" and high["status"] == "ok"):
        return [f"goal (FLUX.1 {LOW}: <= {VRAM_GOAL_GIB:g} GiB, <= {SLOWDOWN_GOAL}x {HIGH}): not measured"]
    vram = (low.get("peak_vram_bytes") or 0) / GIB
    slowdown = low["seconds_per_step"] / high["seconds_per_step"]
    ok = vram <= VRAM_GOAL_GIB and slowdown <= SLOWDOWN_GOAL
    return [
        f"goal (FLUX.1): {LOW} peak VRAM {vram:.1f} GiB (<= {VRAM_GOAL_GIB:g}), {slowdown:.2f}x the s/step of {HIGH} "
        f"(<= {SLOWDOWN_GOAL}): {'met' if ok else 'NOT met'}"
    ]


def table(folder: Path) -> str:
    found = rows(folder)
    lines = [
        "| workload | preset | status | s/step | peak VRAM GiB | peak RSS GiB |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in found:
        ok = r["status"] == "ok"
        memory = [f"{r[k] / GIB:.1f}" if r.get(k) else "–" for k in ("peak_vram_bytes", "peak_rss_bytes")]
        cells = [f"{r['seconds_per_step']:.2f}", *memory] if ok else ["", "", ""]
        lines.append(
            f"| {r['workload']} | {_preset(r['settings'])} | {r['status']} | " + " | ".join(cells) + " |"
        )
    if any(r["workload"].startswith("flux-") for r in found):
        lines += ["", *goal_lines({r["workload"]: r for r in found})]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
