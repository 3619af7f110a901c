"""Training in a child process of the same Python, for hosts: the host stays responsive, a crash in training
cannot take it down, progress arrives as events, Cancel saves a checkpoint, and failures carry their cause.

The child is `python -m lorascripts train --config <work_dir>/config.yaml` (an argument list, never a shell);
it writes `<work_dir>/events.jsonl`, which the parent follows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import StopRequested, TrainingError
from ..fileio import atomic_copy
from ..train.events import STOP_FILE_NAME
from .fingerprint import training_fingerprint

logger = logging.getLogger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that contains `lorascripts`


@dataclass
class JobResult:
    lora_path: Path
    reused: bool
    fingerprint: str
    events: list[dict[str, Any]] = field(default_factory=list)


class _EventTail:
    """Reads complete new lines of a growing events.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = []
        for line in data[:end].splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


class TrainingJob:
    """One LoRA training run for a host; the final file is copied to `destination`."""

    def __init__(self, config: dict[str, Any], work_dir: Path, destination: Path, name: str) -> None:
        self.config = {**config, "output_dir": str(work_dir), "output_name": name}
        self.work_dir, self.destination, self.name = work_dir, destination, name
        self.fingerprint = training_fingerprint(self.config)
        self.process: subprocess.Popen | None = None
        self.events: list[dict[str, Any]] = []

    @property
    def final_path(self) -> Path:
        return self.destination / f"{self.name}.safetensors"

    def _record(self) -> Path:
        return self.work_dir / "fingerprint.json"

    def reusable(self) -> bool:
        """True when this exact job already finished and its LoRA is still in place."""
        try:
            record = json.loads(self._record().read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        lora = Path(record.get("lora", ""))
        return (
            record.get("fingerprint") == self.fingerprint
            and lora == self.final_path
            and lora.is_file()
            and (lora.stat().st_size == record.get("size"))
        )

    def start(self, resume: bool = True) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / STOP_FILE_NAME).unlink(missing_ok=True)
        config = {**self.config, "resume": "auto" if resume else "none"}
        (self.work_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        env["PYTHONUNBUFFERED"] = "1"
        log = open(self.work_dir / "train_output.log", "wb")  # noqa: SIM115 - closed in wait()
        self._log = log
        self._tail = _EventTail(self.work_dir / "events.jsonl")
        self._tail.offset = (
            (self.work_dir / "events.jsonl").stat().st_size
            if (self.work_dir / "events.jsonl").exists()
            else 0
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lorascripts", "train", "--config", str(self.work_dir / "config.yaml")],
            cwd=str(PACKAGE_ROOT),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def request_stop(self) -> None:
        """Ask the child to save a checkpoint and stop (it checks at every step)."""
        (self.work_dir / STOP_FILE_NAME).touch()

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = (self.work_dir / "train_output.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait(
        self,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        poll_seconds: float = 0.3,
        stop_timeout: float = 120.0,
    ) -> JobResult:
        """Follow the child until it ends; raise StopRequested on cancel, TrainingError with the cause on failure."""
        assert self.process is not None, "start() first"
        cancelled_at = None
        try:
            while True:
                for event in self._tail.read():
                    self.events.append(event)
                    if on_event:
                        on_event(event)
                if self.process.poll() is not None:
                    break
                if cancelled_at is None and should_cancel and should_cancel():
                    self.request_stop()
                    cancelled_at = time.time()
                if cancelled_at and time.time() - cancelled_at > stop_timeout:
                    self.process.terminate()
                time.sleep(poll_seconds)
            for event in self._tail.read():
                self.events.append(event)
                if on_event:
                    on_event(event)
        except BaseException:
            self._shutdown(stop_timeout)  # never leave a training child running behind an error
            raise
        finally:
            self._log.close()
        return self._finish(cancelled_at is not None)

    def _shutdown(self, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.request_stop()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def _finish(self, cancelled: bool) -> JobResult:
        code = self.process.returncode if self.process else None
        if cancelled:
            raise StopRequested(
                f"training cancelled; checkpoint kept in {self.work_dir / 'checkpoints'} (run again to resume)"
            )
        if code != 0:
            error = next((e for e in reversed(self.events) if e.get("event") == "error"), None)
            cause = error["message"] if error else "the trainer stopped without a message"
            raise TrainingError(
                f"training failed (exit code {code}): {cause}\n--- end of the training log ---\n{self.log_tail()}"
            )
        produced = self.work_dir / f"{self.name}.safetensors"
        if not produced.is_file():
            raise TrainingError(f"training ended but wrote no LoRA file ({produced}).\n{self.log_tail()}")
        self.destination.mkdir(parents=True, exist_ok=True)
        for suffix in (".safetensors", ".json"):
            source = produced.with_suffix(suffix)
            if source.is_file():
                atomic_copy(source, self.destination / f"{self.name}{suffix}")
        record = {
            "fingerprint": self.fingerprint,
            "lora": str(self.final_path),
            "size": self.final_path.stat().st_size,
        }
        self._record().write_text(json.dumps(record), encoding="utf-8")
        return JobResult(self.final_path, False, self.fingerprint, self.events)

    def run(self, on_event=None, should_cancel=None, on_change: str = "retrain") -> JobResult:  # noqa: ANN001
        """Reuse a finished identical run, or train and wait. A stopped run of the same job resumes; when the
        dataset or settings changed since the last run, `on_change` says whether to retrain from scratch or
        resume from the old checkpoints."""
        if self.reusable():
            logger.info("reusing %s (same dataset, settings and base model)", self.final_path)
            return JobResult(self.final_path, True, self.fingerprint)
        try:
            previous = json.loads(self._record().read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            previous = None
        started = self.work_dir / "started.json"
        try:
            previous = previous or json.loads(started.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            pass
        if previous and previous != self.fingerprint and on_change == "retrain":
            shutil.rmtree(self.work_dir / "checkpoints", ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        started.write_text(json.dumps({"fingerprint": self.fingerprint}), encoding="utf-8")
        self.start(resume=True)
        return self.wait(on_event, should_cancel)
