"""What a dataset check finds: one flag per problem, one entry per image, and the report holding both.
Below the checks (`checks.py`) and the HTML page (`report.py`), which both use these types."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Flag:
    """One problem of one file; errors stop training (unless `dataset_checks: warn`), warnings do not."""

    file: str
    code: str
    severity: str  # "error" or "warning"
    message: str


@dataclass
class ImageInfo:
    """One image of the dataset: its name relative to the root, its size once read, its caption if any."""

    file: str
    path: Path
    size: tuple[int, int] | None
    caption: str | None


@dataclass
class DatasetReport:
    """Every image checked and every flag raised, for the summary and the HTML review page."""

    root: Path
    images: list[ImageInfo] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)

    @property
    def errors(self) -> list[Flag]:
        return [f for f in self.flags if f.severity == "error"]

    @property
    def warnings(self) -> list[Flag]:
        return [f for f in self.flags if f.severity == "warning"]

    def flags_for(self, file: str) -> list[Flag]:
        return [f for f in self.flags if f.file == file]

    def summary(self) -> str:
        lines = [f"{len(self.images)} images: {len(self.errors)} errors, {len(self.warnings)} warnings"]
        for flag in self.flags:
            lines.append(f"  [{flag.severity}] {flag.file}: {flag.message}")
        return "\n".join(lines)
