"""Engine commands run for a host in a child process of the engine's Python (captioning, text generation).

Inside a host, the engine's libraries may exist only in the engine environment (see engine_env.py): the host's
process must not import them. So what the nodes and the tab ask of the engine runs as `python -m lorascripts
...` with the engine's Python, the allow-listed environment of training children, and the host's cancel
button checked while it runs. A failure becomes a LoraScriptsError carrying the child's own message.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import LoraScriptsError, StopRequested
from .engine_env import PACKAGE_ROOT, engine_python
from .jobs import child_environment

SUMMARY_PREFIX = "lora-scripts-summary: "


def run_engine(
    args: list[str], should_cancel: Callable[[], bool] | None = None, poll_seconds: float = 0.3
) -> str:
    """Run `python -m lorascripts <args>` with the engine's Python; returns its standard output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [engine_python(), "-m", "lorascripts", *args],
            cwd=str(PACKAGE_ROOT),
            env=child_environment(),
            stdout=out,
            stderr=err,
        )
        try:
            while process.poll() is None:
                if should_cancel is not None and should_cancel():
                    process.terminate()
                    process.wait(timeout=30)
                    raise StopRequested(f"cancelled: {args[0]}")
                time.sleep(poll_seconds)
        except BaseException:
            if process.poll() is None:
                process.kill()
            raise
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if process.returncode != 0:
        lines = [line for line in stderr.splitlines() if line.startswith("error:")]
        message = lines[-1][len("error:") :].strip() if lines else "\n".join(stderr.strip().splitlines()[-8:])
        raise LoraScriptsError(f"{args[0]} failed (exit code {process.returncode}): {message}")
    return stdout


def summary_of(stdout: str) -> dict:
    """The JSON summary a command printed on its `lora-scripts-summary:` line ({} when there is none)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(SUMMARY_PREFIX):
            return json.loads(line[len(SUMMARY_PREFIX) :])
    return {}


@dataclass
class CaptionRequest:
    """What a host asks to caption: a folder into one metadata.csv, with the form's choices."""

    folder: Path
    output: Path
    captioner: str
    model: str = ""
    trigger: str = ""
    mode: str = "skip_existing"
    batch_size: int = 4
    preset: str = "long"  # what the vision-language captioners are asked (caption/prompts.py)

    def arguments(self) -> list[str]:
        args = ["caption", "--input", str(self.folder), "--output", str(self.output), "--summary"]
        args += ["--captioner", self.captioner, "--mode", self.mode, "--batch-size", str(self.batch_size)]
        args += ["--preset", self.preset]
        if self.model:
            args += ["--model", self.model]
        if self.trigger:
            args += ["--trigger", self.trigger]
        return args


def caption_in_child(request: CaptionRequest, should_cancel: Callable[[], bool] | None = None) -> dict:
    """Caption in the engine's Python; returns the summary (captioned, kept, resumed, failed)."""
    return summary_of(run_engine(request.arguments(), should_cancel))


def generate_in_child(base: str, lora: str | None, prompt: str, **options: object) -> str:
    """`python -m lorascripts generate` in the engine's Python; returns the text."""
    args = ["generate", "--base", base]
    if lora:
        args += ["--lora", lora]
    for key, value in options.items():
        if value not in (None, ""):
            args += [f"--{key.replace('_', '-')}", str(value)]
    return run_engine([*args, "--", prompt]).rstrip("\n")  # "--": a prompt may start with a dash
