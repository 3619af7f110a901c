"""metadata.csv (`file_name,caption`) and sidecar caption files, read and written the way the lora-scripts
articles describe them."""

from __future__ import annotations

import csv
import io
import unicodedata
from pathlib import Path

from ..errors import DatasetError
from ..fileio import atomic_write_text

CAPTION_COLUMNS = ("caption", "text", "prompt", "tags")


def normalise_name(name: str) -> str:
    """The form file names are matched in: `/`-separated, no leading `./`, Unicode NFC.

    NFC because macOS writes decomposed names (e + combining accent) and spreadsheets write composed ones:
    without it a `café.png` row would never find its file.
    """
    name = unicodedata.normalize("NFC", name.strip().replace("\\", "/"))
    while name.startswith("./"):
        name = name[2:]
    return name


def _decode(path: Path, data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}, line {line}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x}). "
            "Save it as UTF-8 (in Excel: CSV UTF-8)."
        ) from None


def read_caption_file(path: Path) -> str:
    """The text of a `.txt`/`.caption` sidecar, stripped; a non-UTF-8 file is named with its line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read caption file {path}: {exc.strerror or exc}.") from None
    return _decode(path, data, "the caption file").strip()


def _rows(path: Path, reader: csv.DictReader, column: str) -> dict[str, str]:
    rows: dict[str, str] = {}
    first_line: dict[str, int] = {}
    line = reader.line_num
    for row in reader:
        row = {(k or "").strip(): v for k, v in row.items()}
        name = normalise_name(row.get("file_name") or "")
        caption = (row.get(column) or "").strip()
        if not name:
            raise DatasetError(f"{path}, line {line + 1}: empty file_name. Fill it in or delete the row.")
        if name in rows and rows[name] != caption:
            raise DatasetError(
                f"{path}, lines {first_line[name]} and {line + 1}: two different captions for {name}. "
                "Keep one of the rows."
            )
        rows[name] = caption
        first_line.setdefault(name, line + 1)
        line = reader.line_num  # a quoted caption may span several lines
    return rows


def read_metadata(path: Path) -> dict[str, str]:
    """file name (see normalise_name) -> caption. Accepts `caption`, `text`, `prompt` or `tags` columns.

    Identical duplicate rows are harmless and merged; two different captions for one file are an error.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}.") from None
    text = _decode(path, data, "metadata.csv")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = [(f or "").strip() for f in reader.fieldnames or []]
        column = next((c for c in CAPTION_COLUMNS if c in fields), None)
        if "file_name" not in fields or column is None:
            raise DatasetError(
                f"{path}: the header must have `file_name` and `caption` columns (found {fields}). "
                "Example first line: file_name,caption"
            )
        return _rows(path, reader, column)
    except csv.Error as exc:
        raise DatasetError(f"{path}, line {reader.line_num}: malformed CSV ({exc}).") from None


def write_metadata(path: Path, rows: dict[str, str]) -> None:
    """Write metadata.csv atomically (a crash never leaves a half-written caption file)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["file_name", "caption"])
    for name, caption in rows.items():
        writer.writerow([name, caption])
    atomic_write_text(path, buffer.getvalue())
