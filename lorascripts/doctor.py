"""`python -m lorascripts doctor`: does this Python have everything the engine needs, at versions that work?

install.py runs it in a freshly built engine environment before declaring it ready, and a user runs it to see
what to repair. It checks requirements.txt (and every dependency of it) against what is installed, then imports
what training, captioning and the toolbox import, so an incompatible pair of versions (diffusers importing a
class an old transformers lacks) shows here, with the fix, instead of in the middle of a run.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .errors import DependencyError
from .host import engine_env as ee

# What the engine imports at run time: libraries, the classes that pull their heavy submodules in, and our
# own entry modules (whose imports follow the same paths as a training or captioning run).
SMOKE_IMPORTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch", ()),
    ("diffusers", ("AutoencoderKL", "DiffusionPipeline")),
    ("transformers", ("AutoModelForCausalLM",)),
    ("peft", ("LoraConfig",)),
    ("lycoris", ()),
    ("accelerate", ("Accelerator",)),
    ("safetensors.torch", ("load_file",)),
    ("torch.utils.tensorboard", ("SummaryWriter",)),
    ("onnxruntime", ()),
    ("imagehash", ()),
    ("scipy", ()),
    ("prodigyopt", ()),
    ("lorascripts.train.trainer", ("train",)),
    ("lorascripts.caption.base", ("create_captioner",)),
    ("lorascripts.llm.train", ("train_llm",)),
    ("lorascripts.toolbox.selftest", ("self_test",)),
)


def _pip_fix(what: str) -> str:
    return f'"{sys.executable}" -m pip install "{what}"'


def requirement_problems(requirements: Path) -> list[str]:
    """Unmet lines of requirements.txt (and of their dependencies) as this Python sees its packages."""
    if not requirements.is_file():
        return []
    lines = ee.read_requirement_lines(requirements)
    return [
        f"{u}; fix: {_pip_fix(u.requirement)}"
        for u in ee.unmet_requirements(lines, ee.visible_distributions())
    ]


def import_problems() -> list[str]:
    """Every smoke import that fails, with the package to install or repair."""
    problems = []
    for module, names in SMOKE_IMPORTS + _family_imports(problems):
        try:
            loaded = importlib.import_module(module)
            for name in names:
                getattr(loaded, name)
        except Exception as exc:  # noqa: BLE001 - any failure here is the finding
            problems.append(
                f"import {module}{' (' + ', '.join(names) + ')' if names else ''}: {describe(exc)}"
            )
    return problems


def _family_imports(problems: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The classes each registered family loads its models with (`Family.required_imports`)."""
    try:
        from .models.families import all_families
    except Exception as exc:  # noqa: BLE001 - the registry needs torch; a failure is the finding
        problems.append(f"import lorascripts.models.families: {describe(exc)}")
        return ()
    return tuple(dict.fromkeys(i for family in all_families() for i in family.required_imports))


def import_failure(exc: BaseException | None) -> ImportError | None:
    """The ImportError behind `exc`, if any (diffusers and transformers wrap them in a RuntimeError)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ImportError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def describe(exc: BaseException) -> str:
    """An import failure in words: which package is missing or which installed one does not fit."""
    cause = import_failure(exc)
    if isinstance(cause, ModuleNotFoundError) and cause.name:
        dist = ee.dist_for_module(cause.name)
        return f"package {dist} is missing from this environment ({sys.executable}); fix: {_pip_fix(dist)}"
    if cause is not None and cause.name:
        dist = ee.dist_for_module(cause.name)
        return (
            f"{cause} - the installed {dist} does not fit the other packages; run install.py again, or "
            f"{_pip_fix(dist)} --upgrade"
        )
    return f"{type(exc).__name__}: {exc}"


def dependency_error(exc: BaseException) -> DependencyError:
    """An ImportError raised during a run, as the environment problem it is (never "a bug in lora-scripts")."""
    return DependencyError(
        f'{describe(exc)}. Check the whole environment with: "{sys.executable}" -m lorascripts doctor'
    )


def internal_error_message(exc: BaseException) -> str:
    """What the CLIs print for an exception that is not one of ours: a bug, so say how to report it."""
    import traceback

    if import_failure(exc) is not None:  # the environment, not our code: say which package and how to repair
        return f"error: {dependency_error(exc)}"
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return (
        f"internal error: {type(exc).__name__}: {exc}{where}. This is a bug in lora-scripts, not in your input: "
        "rerun with --debug for the traceback and report it with the command you ran."
    )


def doctor_report(quiet: bool = False) -> tuple[list[str], bool]:
    """The report's lines and whether there is nothing to repair (quiet: only the problems)."""
    import platform

    problems = requirement_problems(ee.PACKAGE_ROOT / "requirements.txt") + import_problems()
    lines = []
    if not quiet or problems:
        lines.append(f"python {platform.python_version()} at {sys.executable}")
        try:
            import torch

            cuda = torch.version.cuda or "none"
            lines.append(f"torch {torch.__version__} (CUDA {cuda}, available: {torch.cuda.is_available()})")
        except Exception:  # noqa: BLE001 - the import problem is listed below
            pass
    lines += [f"problem: {problem}" for problem in problems]
    if not problems and not quiet:
        lines.append("everything lora-scripts needs is installed and imports")
    return lines, not problems
