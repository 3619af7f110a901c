"""metadata.csv (`file_name,caption`) read and written the way the lora-scripts articles describe it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import DatasetError
from ..fileio import atomic_write_text

CAPTION_COLUMNS = ("caption", "text", "prompt", "tags")


def read_metadata(path: Path) -> dict[str, str]:
    """file name (relative, `/`-separated) -> caption. Accepts `caption`, `text`, `prompt` or `tags` columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in reader.fieldnames or []]
            column = next((c for c in CAPTION_COLUMNS if c in fields), None)
            if "file_name" not in fields or column is None:
                raise DatasetError(
                    f"{path}: the header must have `file_name` and `caption` columns (found {fields}). "
                    "Example first line: file_name,caption"
                )
            rows: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip(): v for k, v in row.items()}
                name = (row.get("file_name") or "").strip().replace("\\", "/")
                if not name:
                    raise DatasetError(f"{path}, line {line}: empty file_name.")
                rows[name] = (row.get(column) or "").strip()
            return rows
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc.reason}). Save it as UTF-8 CSV.") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV ({exc}).") from None


def write_metadata(path: Path, rows: dict[str, str]) -> None:
    """Write metadata.csv atomically (a crash never leaves a half-written caption file)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["file_name", "caption"])
    for name, caption in rows.items():
        writer.writerow([name, caption])
    atomic_write_text(path, buffer.getvalue())
