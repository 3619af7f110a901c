"""Training in a child process of the engine's Python (engine_env.py), for hosts: the host stays responsive, a crash in training
cannot take it down, progress arrives as events, Cancel saves a checkpoint, and failures carry their cause.

The child is `python -m lorascripts train --config <work_dir>/config.yaml --keep-stop-file` (an argument list,
never a shell); it writes `<work_dir>/events.jsonl`, which the parent follows. It gets only the environment
variables training needs (`child_environment`), not the host's secrets.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig, config_from_dict, save_config
from ..errors import StopRequested, TrainingError
from ..fileio import atomic_copy, atomic_write_text, clean_partial_files
from ..run.events import STOP_FILE_NAME
from .engine_env import PACKAGE_ROOT, engine_python
from .fingerprint import training_fingerprint

logger = logging.getLogger(__name__)

# What the training child inherits: how to find programs, libraries, locale, temp and home folders, and the
# settings of Python, the GPU stacks, torch/accelerate and the Hugging Face cache (HF_TOKEN included: gated
# model downloads need it). Everything else - API keys, cloud credentials, the host's own settings - stays out.
CHILD_ENV_NAMES = frozenset(
    "PATH HOME USER USERNAME LOGNAME LANG LANGUAGE TERM TZ TMPDIR TEMP TMP VIRTUAL_ENV CONDA_PREFIX "
    "LD_LIBRARY_PATH DYLD_LIBRARY_PATH SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE "
    "HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy "
    "SYSTEMROOT SYSTEMDRIVE WINDIR COMSPEC PATHEXT USERPROFILE APPDATA LOCALAPPDATA PROGRAMDATA".split()
)
CHILD_ENV_PREFIXES = (
    "LC_", "XDG_", "PYTHON", "CUDA", "CUDNN", "NCCL_", "NVIDIA_", "HIP_", "ROCM_", "HSA_", "ROCR_", "ZE_",
    "ONEAPI_", "SYCL_", "IPEX_", "MPS_", "TORCH", "PYTORCH_", "OMP_", "MKL_", "KMP_", "OPENBLAS_",
    "ACCELERATE_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_", "TOKENIZERS_", "SAFETENSORS_",
    "LORA_SCRIPTS_",
)  # fmt: skip


def child_environment(parent: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment of a training child, with our package first on PYTHONPATH."""
    parent = dict(os.environ if parent is None else parent)
    env = {k: v for k, v in parent.items() if k in CHILD_ENV_NAMES or k.startswith(CHILD_ENV_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), parent.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def exit_cause(code: int | None) -> str:
    """How a child ended, in words: a signal by name (SIGKILL is usually the system's out-of-memory killer)."""
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = (
        " - usually the system ran out of memory (its OOM killer ends the biggest process) or someone "
        "killed it; lower batch_size or resolution if memory was the cause"
        if -code == signal.SIGKILL
        else ""
    )
    return f"the training process was killed by {name}{hint}"


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

    def __init__(
        self, config: TrainConfig | Mapping[str, Any], work_dir: Path, destination: Path, name: str
    ) -> None:
        """`config`: the validated config of the run (`host/form.py` makes it from a form; a mapping is
        validated into one here). The job's folder and name replace its output_dir and output_name."""
        if not isinstance(config, TrainConfig):
            config = config_from_dict(config, source="the training job")
        self.config = dataclasses.replace(config, output_dir=str(work_dir), output_name=name)
        self.work_dir, self.destination, self.name = work_dir, destination, name
        self.fingerprint = training_fingerprint(self.config.to_dict())
        self.process: subprocess.Popen | None = None
        self.events: list[dict[str, Any]] = []

    @property
    def config_path(self) -> Path:
        """The config file the training child reads."""
        return self.work_dir / "config.yaml"

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

    def write_config(self, resume: bool = True) -> Path:
        """Write the config the child reads: exactly the validated one (paths absolute, see host/form.py)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        save_config(dataclasses.replace(self.config, resume="auto" if resume else "none"), self.config_path)
        return self.config_path

    def start(self, resume: bool = True) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / STOP_FILE_NAME).unlink(missing_ok=True)
        clean_partial_files(self.destination, f"{self.name}.")  # copies a killed host left half-done
        self.write_config(resume)
        log = open(self.work_dir / "train_output.log", "wb")  # noqa: SIM115 - closed in wait()
        self._log = log
        self._tail = _EventTail(self.work_dir / "events.jsonl")
        self._tail.offset = (
            (self.work_dir / "events.jsonl").stat().st_size
            if (self.work_dir / "events.jsonl").exists()
            else 0
        )
        # the STOP file left by an earlier run is removed above; one found by the child is a Cancel of this run
        command = ["-m", "lorascripts", "train", "--config", str(self.config_path), "--keep-stop-file"]
        self.process = subprocess.Popen(
            [engine_python(), *command],
            cwd=str(PACKAGE_ROOT),
            env=child_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _said_error(self) -> str:
        """The last `error:` line the child printed (an error before its events began), or ''."""
        said = [line for line in self.log_tail().splitlines() if line.startswith("error:")]
        return said[-1][len("error:") :].strip() if said else ""

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
            cause = (
                error["message"] if error else self._said_error() or "the trainer stopped without a message"
            )
            if error is None and code is not None and code < 0:
                cause = f"the last checkpoint is kept in {self.work_dir / 'checkpoints'}; run again to resume"
            raise TrainingError(
                f"training failed ({exit_cause(code)}): {cause}\n--- end of the training log ---\n{self.log_tail()}"
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
        atomic_write_text(self._record(), json.dumps(record))
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
        atomic_write_text(started, json.dumps({"fingerprint": self.fingerprint}))
        self.start(resume=True)
        return self.wait(on_event, should_cancel)
