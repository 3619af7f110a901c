"""`python tests/crash_child.py train --config x.yaml`: the real `python -m lorascripts` with a crash planted.

Environment variables (all optional) choose what happens to this process:
- LS_CRASH_AT=`<audit event>|<substring>|<n>`: SIGKILL itself at the n-th audit event `open` (for writing)
  or `os.rename` whose path contains the substring, e.g. `os.rename|.partial|1` (a LoRA fully written to its temporary file,
  not yet renamed) or `open|/.tmp-|2` (a checkpoint folder half written). Python's audit hooks (PEP 578) see
  every file open and rename, so the kill lands exactly inside a save, with nothing in the engine changed.
- LS_FSIZE_LIMIT=<bytes>: RLIMIT_FSIZE with SIGXFSZ ignored, so a bigger file write fails with EFBIG, as on a
  full disk.
- LS_AS_LIMIT_MB=<MiB>: after the imports, cap the address space at what is mapped now plus this much, so a
  big allocation fails as out of memory.
"""

from __future__ import annotations

import os
import resource
import signal
import sys


def _writes(args: tuple) -> bool:
    """An `open` audit event (path, mode, flags) that writes: open(..., "wb") or os.open(..., O_WRONLY ...)."""
    mode, flags = (args + (None, None))[1:3]
    return bool(set(str(mode or "")) & set("wax+")) or bool((flags or 0) & (os.O_WRONLY | os.O_RDWR))


def _plant_kill(plan: str) -> None:
    event, needle, nth = plan.split("|")
    seen = [0]

    def hook(name: str, args: tuple) -> None:
        if name == event and args and needle in str(args[0]) and (name != "open" or _writes(args)):
            seen[0] += 1
            if seen[0] == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def main() -> int:
    if os.environ.get("LS_FSIZE_LIMIT"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(os.environ["LS_FSIZE_LIMIT"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from lorascripts.cli import main as cli_main

    if os.environ.get("LS_AS_LIMIT_MB"):
        import diffusers  # noqa: F401 - map the big libraries before the cap
        import torch  # noqa: F401

        cap = _mapped_bytes() + int(os.environ["LS_AS_LIMIT_MB"]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
    if os.environ.get("LS_CRASH_AT"):
        _plant_kill(os.environ["LS_CRASH_AT"])
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
