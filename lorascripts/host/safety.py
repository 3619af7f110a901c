"""Path rules for hosts that take requests from a network (ComfyUI): what a request may read and write.

The ComfyUI nodes pass their folders in; nothing here imports a host, so the rules are tested on their own.
Every check resolves symlinks first, so a link that points out of an allowed folder is refused like `..`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from ..config import TrainConfig
from ..errors import ConfigError

ALLOW_ABSOLUTE_ENV = "LORA_SCRIPTS_ALLOW_ABSOLUTE_PATHS"


def inside(path: Path, root: Path) -> bool:
    """True when `path`, with every symlink resolved, is `root` or below it."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except (ValueError, OSError):
        return False


def plain_text(value: object, what: str) -> str:
    """A request's text field: a non-empty string without NUL bytes."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ConfigError(f"{what} must be a non-empty text, got {type(value).__name__} {str(value)[:80]!r}.")
    return value.strip()


def confine(path: str | Path, roots: Sequence[Path], what: str) -> Path:
    """`path` resolved (symlinks followed); ConfigError unless it lies inside one of `roots`."""
    resolved = Path(plain_text(str(path), what)).expanduser().resolve()
    if not any(inside(resolved, root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ConfigError(f"{what} {path} is outside the folders this server allows ({allowed}).")
    return resolved


def links_leaving(folder: Path, roots: Sequence[Path], limit: int = 100_000) -> list[Path]:
    """Symlinks under `folder` (not followed while walking) whose targets resolve outside every root."""
    found: list[Path] = []
    seen = 0
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in (*dirs, *files):
            seen += 1
            path = Path(top) / name
            if path.is_symlink() and not any(inside(path, root) for root in roots):
                found.append(path)
        if seen > limit:
            break
    return found


def refuse_links_leaving(folder: Path, roots: Sequence[Path]) -> None:
    """ConfigError naming the links in a dataset folder that point out of the allowed folders."""
    leaving = links_leaving(folder, roots)
    if leaving:
        names = ", ".join(str(p.relative_to(folder)) for p in leaving[:5])
        raise ConfigError(
            f"{folder} contains symlinks that point outside the allowed folders ({names}); copy those files "
            "into the dataset folder instead."
        )


def is_loopback(listen: str) -> bool:
    """True when every address a server listens on (`--listen`, comma-separated) is this machine only."""
    for address in (a.strip() for a in listen.split(",")):
        if address == "localhost":
            continue
        try:
            if not ipaddress.ip_address(address).is_loopback:
                return False
        except ValueError:
            return False
    return True


def absolute_paths_allowed(listen: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether a node may be switched to absolute paths: on a server only this machine can reach, or where its
    owner set LORA_SCRIPTS_ALLOW_ABSOLUTE_PATHS=1 (on a network-facing server any client could flip the
    node's switch, so the switch alone cannot be the permission)."""
    env = os.environ if env is None else env
    return is_loopback(listen) or env.get(ALLOW_ABSOLUTE_ENV, "") == "1"


def path_keys() -> list[str]:
    """The config keys that hold file or folder paths."""
    return [f.name for f in fields(TrainConfig) if f.metadata.get("path")]


def check_request_config(
    cfg: TrainConfig,
    fixed: Mapping[str, str],
    read_roots: Sequence[Path],
    write_roots: Sequence[Path],
    extra_read: Iterable[Path] = (),
) -> None:
    """A training config built from a request: the keys the host fixed (base model, dataset) are unchanged
    (no alias slipped another value in), every other path is read inside `read_roots` (or is one of
    `extra_read`, folders the host approved), and the cache is written inside `write_roots`."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("this node trains image LoRAs; remove `task` from the advanced YAML.")
    for key, value in fixed.items():
        given = getattr(cfg, key)
        same = Path(given).resolve() == Path(value).resolve() if key in path_keys() else given == value
        if not same:
            raise ConfigError(f"`{key}` is set by the node; remove it (or its alias) from the advanced YAML.")
    approved = [Path(p).resolve() for p in extra_read]
    for key in path_keys():
        value = getattr(cfg, key)
        if not value or key in fixed or key == "output_dir":
            continue
        roots = list(write_roots) if key == "cache_dir" else [*read_roots, *approved]
        for one in value if isinstance(value, list) else [value]:
            confine(one, roots, f"`{key}`")
    if cfg.resume not in ("auto", "none"):
        raise ConfigError("`resume` is chosen by the node (it resumes a stopped run by itself); remove it.")
