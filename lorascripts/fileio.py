"""Small file helpers shared across the engine: hashes, and writes that a crash or a full disk cannot turn into
a half file.

Every write goes to a temporary file in the target folder (`.<name>-XXXX.partial`), is flushed to disk, and
is renamed over the target, so the target is always absent, the old file or the whole new one. A kill -9
leaves at most a `.partial` file, which `clean_partial_files` (called at the next start) removes. A full disk
or file-size limit becomes a StorageError that names the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import time
from pathlib import Path

from .errors import StorageError

PARTIAL_SUFFIX = ".partial"
# "no space left", "file too large" (RLIMIT_FSIZE, FAT32's 4 GiB) and "disk quota exceeded"
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def legacy_model_hash(path: Path) -> str:
    """AUTOMATIC1111's old checkpoint hash, kohya's `ss_sd_model_hash`: SHA-256 of the 64 KiB at offset 1 MiB,
    first 8 hex digits (of no bytes at all when the file is shorter, as both compute it)."""
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]


def is_disk_full(exc: BaseException) -> bool:
    """True for the OSErrors a full disk, a quota or a file-size limit produce."""
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def disk_full_error(exc: OSError, path: Path | str) -> StorageError:
    """Our error for a write that failed on space: what, where, and what to do."""
    reason = exc.strerror or str(exc)
    return StorageError(
        f"no space left / file too large while writing {path} ({reason}). Free space on that drive (or point "
        "output_dir elsewhere, save less often, lower keep_last_n) and run again with resume: auto; files "
        "saved before are intact."
    )


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes, target: Path | None = None) -> None:
    """Write a new file and flush it to disk (the caller renames it into place as `target`, the name an error
    shows)."""
    try:
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(exc, target or path) from exc
        raise


def _temporary(target: Path) -> Path:
    # not tempfile.mkstemp: its files are private (0600), and a LoRA must stay readable by a WebUI or ComfyUI
    # running as another user, as a plain write would leave it (0666 minus the umask)
    while True:
        tmp = target.parent / f".{target.name}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        write_synced(tmp, data, path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(source: Path, target: Path) -> Path:
    """Copy a file so that `target` is either absent, the old file, or the whole new copy (a host may be
    listing the folder at that moment)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(target)
    try:
        try:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, target) from exc
            raise
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target


def clean_partial_files(folder: Path, stem: str = "", older_than_s: float = 0.0) -> list[Path]:
    """Remove the temporary files of writes that were killed (`.<stem>*.partial` in `folder`); returns them.

    `older_than_s` spares younger ones: in a folder that several runs share (a cache_dir), a fresh partial file
    is another run's write in progress.
    """
    removed = []
    if folder.is_dir():
        now = time.time()
        for p in folder.glob(f".{stem}*{PARTIAL_SUFFIX}"):
            try:
                if older_than_s and now - p.stat().st_mtime < older_than_s:
                    continue
            except OSError:
                continue
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def ordinary_permissions(folder: Path) -> None:
    """Give every file under `folder` the mode a plain write would (0666 minus the umask).

    Libraries that write through private temporary files (safetensors' `save_file`, hence peft's and
    transformers' `save_pretrained`) leave 0600 files, which a ComfyUI or WebUI running as another user cannot
    read. The umask is read from a probe file rather than with os.umask(), which would change it for every thread
    of a host process for a moment."""
    probe = _temporary(folder / "mode-probe")
    try:
        mode = probe.stat().st_mode & 0o777
    finally:
        probe.unlink(missing_ok=True)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def refuse_replacing_inputs(
    output: Path, inputs: list[Path], overwrite: bool = False, flag: str = "--overwrite"
) -> None:
    """Raise ConfigError when `output` is one of `inputs` (the same file by any path): a tool's output must never
    replace what it reads unless the user asked for exactly that with `flag`."""
    from .errors import ConfigError

    if overwrite or not output.exists():
        return
    for source in inputs:
        if source.exists() and os.path.samefile(source, output):
            raise ConfigError(
                f"the output {output} is the input {source}: writing it would replace your file. "
                f"Choose another output path, or pass {flag} to replace it on purpose."
            )
