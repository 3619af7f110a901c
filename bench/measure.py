"""Measuring a contender: child processes with their peak memory, and step timings turned into rates.

Peak RSS is the kernel's high-water mark of the one process (VmHWM; `wait4`'s ru_maxrss is the same number for
a child we reap). Peak VRAM is sampled from nvidia-smi per process, so it counts what the card really holds
(CUDA context included) the same way for every trainer, whatever allocator it uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workloads import Workload

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RunResult:
    """One run of one contender on one workload: raw step times and what they summarise to."""

    contender: str
    workload: str
    launched_at: float  # wall clock (time.time()) when the process was started / the prompt was queued
    step_times: list[tuple[int, float]]  # (step number, wall clock when that step finished)
    batch: int
    warmup: int
    peak_rss_bytes: int | None = None
    peak_vram_bytes: int | None = None
    dtype: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def startup_s(self) -> float | None:
        """Launch to the end of the first optimizer step (imports, model load, caches and one step)."""
        return self.step_times[0][1] - self.launched_at if self.step_times else None

    @property
    def seconds_per_step(self) -> float | None:
        """Steady state: time between the end of the warm-up steps and the last step, per step."""
        steady = [(n, t) for n, t in self.step_times if n >= self.warmup]
        if len(steady) < 2:
            return None
        (n0, t0), (n1, t1) = steady[0], steady[-1]
        return (t1 - t0) / (n1 - n0)

    @property
    def images_per_s(self) -> float | None:
        sps = self.seconds_per_step
        return self.batch / sps if sps else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            startup_s=self.startup_s, seconds_per_step=self.seconds_per_step, images_per_s=self.images_per_s
        )
        return out


def child_env(threads: int | None = None) -> dict[str, str]:
    """Environment of a contender process: this checkout's `lorascripts` first, no progress-bar noise."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


class VramSampler:
    """Highest per-process GPU memory nvidia-smi reports for `pid` while the sampler runs (None without one)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval, self.peak = pid, interval, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if shutil.which("nvidia-smi"):
            self._thread.start()

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                return
            for line in out.splitlines():
                pid, _, mib = line.partition(",")
                if pid.strip() == str(self.pid) and mib.strip().isdigit():
                    self.peak = max(self.peak or 0, int(mib.strip()) * 2**20)
            self._stop.wait(self.interval)

    def stop(self) -> int | None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        return self.peak


def run_child(args: list[str], log: Path, timeout: float, env: dict[str, str]) -> tuple[int, int, int | None]:
    """Run a process to its end; (exit code, peak RSS bytes of that process, peak VRAM bytes or None)."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, cwd=str(REPO), env=env, stdout=fh, stderr=subprocess.STDOUT)
        vram = VramSampler(proc.pid)
        deadline = time.time() + timeout
        while True:
            # wait4 reaps this one child and gives its own rusage (ru_maxrss, KiB on Linux)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, vram.stop()


def run_trainer(
    contender: str, w: Workload, args: list[str], events_path: Path, log: Path, timeout: float
) -> tuple[RunResult, dict[str, dict[str, Any]]]:
    """Run a trainer that writes events.jsonl (`started`, one `step` per step); the result and the first event
    of each kind."""
    from lorascripts.run.events import read_events

    launched = time.time()
    code, rss, vram = run_child(args, log, timeout, child_env())
    events = read_events(events_path)
    steps = [(int(e["step"]), float(e["time"])) for e in events if e.get("event") == "step"]
    first: dict[str, dict[str, Any]] = {}
    for e in events:
        first.setdefault(str(e.get("event")), e)
    if vram is None:  # nvidia-smi lists no processes inside some containers: the trainer's own allocator peak
        vram = first.get("finished", {}).get("peak_vram_bytes")
    result = RunResult(contender, w.name, launched, steps, w.batch, w.warmup, rss, vram)
    if code != 0 or len(steps) < w.steps:
        result.error = f"exit code {code}, {len(steps)}/{w.steps} steps:\n{log_tail(log)}"
    return result, first


def vm_hwm(pid: int) -> int | None:
    """Peak resident memory of a running process (VmHWM from /proc), bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""
