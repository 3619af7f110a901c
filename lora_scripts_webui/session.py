"""One training run at a time for the WebUI: a background thread follows a child-process job.

The WebUI process never trains itself: `TrainingJob` runs `python -m lorascripts train` as a child (an argument
list, no shell), so a crash or out-of-memory in training cannot take the WebUI down. This thread only follows
the job's events, and the tab polls `snapshot()` once a second.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorascripts.config import TrainConfig
from lorascripts.errors import StopRequested, TrainingError
from lorascripts.fileio import atomic_copy
from lorascripts.host.jobs import TrainingJob
from lorascripts.host.names import safe_name

from . import hooks

logger = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """What the tab shows; copied under the lock so the UI never sees a half-updated state."""

    state: str = "idle"  # idle, starting, training, finished, stopped, failed
    message: str = ""
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    it_per_s: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)  # validation loss per evaluated step
    samples: list[str] = field(default_factory=list)
    lora_path: str = ""
    self_test: str = ""  # the WebUI key-mapping check of the saved file, as the trainer reported it
    estimate: str = ""  # the pre-flight estimate (peak memory, s/step, suggestion), before the model loads
    started_at: float = 0.0

    @property
    def running(self) -> bool:
        return self.state in ("starting", "training")


class TrainingSession:
    """Starts, follows and stops the one training run the tab owns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = Snapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._partials: list[
            Path
        ] = []  # LoRAs-so-far put into the Lora folder by Stop; removed once finished

    def snapshot(self) -> Snapshot:
        with self._lock:
            s = self._state
            return Snapshot(
                **{
                    **s.__dict__,
                    "losses": list(s.losses),
                    "validation": list(s.validation),
                    "samples": list(s.samples),
                }
            )

    def _update(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._state, key, value)

    def start(self, config: TrainConfig, name: str, unload_model: bool = True) -> None:
        """Begin training in the background; refuses while another run is going."""
        with self._lock:
            if self._state.running:
                raise RuntimeError("a training run is already going; stop it first.")
            self._state = Snapshot(state="starting", message="starting the trainer", started_at=time.time())
        self._stop.clear()
        job = TrainingJob(
            config, hooks.work_dir() / "runs" / safe_name(name), hooks.lora_dir(), safe_name(name)
        )
        self._thread = threading.Thread(target=self._run, args=(job, unload_model), daemon=True)
        self._thread.start()

    def request_stop(self) -> bool:
        """Ask the run to save a checkpoint and end; True when a run was going."""
        if not self.snapshot().running:
            return False
        self._stop.set()
        self._update(message="stopping: saving a checkpoint")
        return True

    def wait(self, timeout: float | None = None) -> Snapshot:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "started":
            self._update(
                state="training",
                total=event.get("total_steps", 0),
                step=event.get("start_step", 0),
                message="",
            )
        elif kind == "step":
            with self._lock:
                s = self._state
                s.step, s.total = event["step"], event["total_steps"]
                s.eta_s, s.it_per_s = event.get("eta_s"), event.get("it_per_s", 0.0)
                s.losses.append((event["step"], float(event["loss"])))
        elif kind == "validation":
            with self._lock:
                self._state.validation.append((event["step"], float(event["loss"])))
        elif kind == "sample":
            self._update(samples=list(event.get("paths", [])))
        elif kind == "estimate":
            self._update(estimate=str(event.get("summary", "")))
        elif kind in ("loading_model", "caching", "resumed"):
            self._update(message=kind.replace("_", " "))
        elif kind == "checkpoint":
            self._update(lora_path=event.get("lora", ""))
        elif kind == "self_test":
            verdict = "passed" if event.get("ok") else "FAILED"
            self._update(self_test=f"WebUI key check {verdict}: {event.get('summary', '')}")

    def _run(self, job: TrainingJob, unload_model: bool) -> None:
        unloaded = hooks.unload_generation_model() if unload_model else False
        try:
            result = job.run(on_event=self._on_event, should_cancel=self._stop.is_set)
            for partial in self._partials:
                partial.unlink(missing_ok=True)
            self._partials.clear()
            refreshed = hooks.refresh_loras()
            tag = f"<lora:{job.name}:{job.config.preferred_weight}>"
            note = "" if refreshed else " (press Refresh on the Lora tab to see it)"
            verb = "reused the finished" if result.reused else "saved"
            self_test = self.snapshot().self_test
            check = f"\n{self_test}" if self_test else ""
            self._update(
                state="finished",
                lora_path=str(result.lora_path),
                message=f"{verb} {result.lora_path}: use {tag}{note}{check}",
            )
        except StopRequested as exc:
            self._update(state="stopped", message=self._stopped_message(job, str(exc)))
        except TrainingError as exc:
            self._update(state="failed", message=str(exc))
        except Exception as exc:  # the tab must show any failure instead of hanging in "training"
            logger.exception("training run failed")
            self._update(state="failed", message=f"{type(exc).__name__}: {exc}")
        finally:
            if unloaded:
                hooks.reload_generation_model()

    def _stopped_message(self, job: TrainingJob, reason: str) -> str:
        """After Stop: the LoRA saved so far goes to the Lora folder under its step name; Train resumes."""
        snap = self.snapshot()
        text = f"Stopped at step {snap.step}; checkpoint saved in {job.work_dir / 'checkpoints'}."
        partial = Path(snap.lora_path or "")
        if partial.is_file():
            target = atomic_copy(partial, hooks.lora_dir() / partial.name)
            self._partials.append(target)
            hooks.refresh_loras()
            text += f"\nThe LoRA so far is {target.name} in the Lora folder."
        logger.info("%s (%s)", text, reason)
        return text + "\nPress Train with the same settings to resume."
