"""Events out, commands in: the one small interface between a training run and whatever hosts it.

Events are JSON objects written one per line to `<output_dir>/events.jsonl` and passed to callbacks:
started, step (loss, lr, it/s, eta), sample, checkpoint, finished, stopped, error, ...; the fields of each
kind are typed in event_types.py. The ComfyUI and
WebUI integrations follow that file (or pass callbacks in-process). A stop is requested by creating
`<output_dir>/STOP` (any process can do that) or by calling `StopControl.request()`; the run then saves a
checkpoint and ends with StopRequested.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .event_types import event_problems

logger = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]
STOP_FILE_NAME = "STOP"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class EventSink:
    """Writes events as JSON lines and forwards them to callbacks; a failing callback never stops training."""

    def __init__(self, path: Path | None, callbacks: list[EventCallback] | None = None) -> None:
        self.path = path
        self.callbacks = list(callbacks or [])
        self._lock = threading.Lock()
        self._write_failed = False
        self._misfits: set[str] = set()  # event kinds already reported as not fitting the schema
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _end_torn_line(path)

    def emit(self, event: str, **data: Any) -> dict[str, Any]:
        """Record one event and hand it to every callback."""
        record = {"event": event, "time": round(time.time(), 3), **_jsonable(data)}
        problems = event_problems(record)
        if problems and event not in self._misfits:  # a bug of ours, reported once per kind, never fatal
            self._misfits.add(event)
            logger.warning("event %s does not fit its schema (run/event_types.py): %s", event, problems)
        if self.path is not None:
            line = json.dumps(record, ensure_ascii=False)
            try:
                with self._lock, open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError as exc:  # a full disk must not hide the error being reported
                if not self._write_failed:
                    logger.warning("cannot append to %s (%s); events go to callbacks only", self.path, exc)
                self._write_failed = True
        for callback in self.callbacks:
            try:
                callback(record)
            except Exception:  # a UI callback must never kill a training run
                logger.exception("event callback failed for %s (ignored)", event)
        return record


def _end_torn_line(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline: end it, so the next event is whole."""
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, 2)
            if size:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
    except OSError:
        pass  # no file yet


class StopControl:
    """Stop requests from a signal handler, a host thread, or a STOP file in the output folder."""

    def __init__(self, output_dir: Path | None = None) -> None:
        self._event = threading.Event()
        self.stop_file = output_dir / STOP_FILE_NAME if output_dir is not None else None
        self.reason = ""

    def request(self, reason: str = "stop requested") -> None:
        """Ask the run to save and stop at the next step boundary."""
        self.reason = reason
        self._event.set()

    def clear_stale_file(self) -> None:
        """Remove a STOP file left from an earlier run, so a new run does not stop at once."""
        if self.stop_file is not None and self.stop_file.exists():
            self.stop_file.unlink()

    @property
    def requested(self) -> bool:
        if not self._event.is_set() and self.stop_file is not None and self.stop_file.exists():
            self.request(f"stop file {self.stop_file} found")
        return self._event.is_set()


OUT_OF_MEMORY_ADVICE = (
    "Lower batch_size or resolution, switch on gradient_checkpointing, use cache_latents: disk and "
    "cache_text_encoder_outputs: disk (with train_text_encoder: false), mixed_precision: bf16, or close other "
    "programs that use the GPU/RAM."
)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA/MPS OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def as_engine_error(exc: BaseException) -> BaseException:
    """Out of memory, a full disk and a missing package, wherever they happen, become our errors with what to
    change."""
    from ..errors import StorageError, TrainingError
    from ..fileio import disk_full_error, is_disk_full

    if is_out_of_memory(exc):
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return TrainingError(f"out of memory ({type(exc).__name__}: {first_line}). {OUT_OF_MEMORY_ADVICE}")
    if is_disk_full(exc) and not isinstance(exc, StorageError):
        return disk_full_error(exc, getattr(exc, "filename", None) or "a file")
    from ..doctor import dependency_error, import_failure

    if import_failure(exc) is not None:
        return dependency_error(exc)
    return exc


@contextmanager
def report_outcome(events: EventSink) -> Iterator[None]:
    """Record how a run ended (`stopped`, or `error` with its kind and message) and let the exception go on;
    out of memory and a full disk go on as TrainingError / StorageError with the fix in the message."""
    from ..errors import LoraScriptsError, StopRequested

    try:
        yield
    except StopRequested as exc:
        events.emit("stopped", message=str(exc))
        raise
    except LoraScriptsError as exc:
        events.emit("error", kind=type(exc).__name__, message=str(exc))
        raise
    except Exception as exc:
        ours = as_engine_error(exc)
        if ours is not exc:
            events.emit("error", kind=type(ours).__name__, message=str(ours))
            raise ours from exc
        events.emit("error", kind=type(exc).__name__, message=f"{type(exc).__name__}: {exc}")
        raise


def read_events(path: Path) -> list[dict[str, Any]]:
    """Parse an events.jsonl file (skipping a partially written last line)."""
    events = []
    if not path.exists():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
