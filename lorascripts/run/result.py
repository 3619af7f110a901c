"""What a finished image run hands back to its caller (CLI, host job, tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainResult:
    """What a finished run produced."""

    lora_path: Path
    output_dir: Path
    steps: int
    final_loss: float | None
    compat_ok: bool | None = None
    files: list[Path] = field(default_factory=list)
