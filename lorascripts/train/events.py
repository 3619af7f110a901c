"""Events out, commands in: the one small interface between a training run and whatever hosts it.

Events are JSON objects written one per line to `<output_dir>/events.jsonl` and passed to callbacks:
started, step (loss, lr, it/s, eta), sample, checkpoint, saved, finished, stopped, error. The ComfyUI and
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
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **data: Any) -> dict[str, Any]:
        """Record one event and hand it to every callback."""
        record = {"event": event, "time": round(time.time(), 3), **_jsonable(data)}
        if self.path is not None:
            line = json.dumps(record, ensure_ascii=False)
            with self._lock, open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        for callback in self.callbacks:
            try:
                callback(record)
            except Exception:  # a UI callback must never kill a training run
                logger.exception("event callback failed for %s (ignored)", event)
        return record


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


@contextmanager
def report_outcome(events: EventSink) -> Iterator[None]:
    """Record how a run ended (`stopped`, or `error` with its kind and message) and let the exception go on."""
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
