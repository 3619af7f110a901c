"""The optimizer classes behind `optimizer:` and the check of `optimizer_args` against them at config load.

`optimizer_args` goes straight into a library constructor; unchecked, an unknown name is a TypeError from torch
minutes into a run (after the model loaded and latents were cached). Here it is checked when the config is read:
names against the constructor's signature, values by building the optimizer once over a one-element tensor.
"""

from __future__ import annotations

import importlib.util
import inspect
from typing import Any

from ..errors import ConfigError
from .validate import short_repr, suggest

# What a library raises for a bad keyword value (`betas: []` is an IndexError inside AdamW, `betas: {}` a
# KeyError): at the boundary where optimizer_args enter a library, each becomes a ConfigError naming the key.
ARGUMENT_ERRORS = (TypeError, ValueError, RuntimeError, AssertionError, KeyError, IndexError)
# keys the config sets itself: the run passes them, so a second copy in optimizer_args is a TypeError
_OWNED = {"params": "the LoRA parameters", "lr": "`learning_rate`"}
# Where each optimizer lives (module, attribute, the package to install).
_WHERE = {
    "adamw": ("torch.optim", "AdamW", "torch"),
    "adamw8bit": ("bitsandbytes.optim", "AdamW8bit", "bitsandbytes"),
    "prodigy": ("prodigyopt", "Prodigy", "prodigyopt"),
    "adafactor": ("transformers.optimization", "Adafactor", "transformers"),
}


def library_defaults(name: str) -> dict[str, Any]:
    """Arguments we pass unless the user sets them: Adafactor with an explicit learning rate (as kohya runs it)."""
    if name == "adafactor":
        return {"relative_step": False, "scale_parameter": False, "warmup_init": False}
    return {}


def optimizer_class(name: str) -> type | None:
    """The optimizer class for `optimizer: name`, or None when its package is not installed."""
    module, attr, package = _WHERE[name]
    if importlib.util.find_spec(package) is None:
        return None
    return getattr(importlib.import_module(module), attr)


def _accepted(cls: type) -> list[str] | None:
    """Keyword names the constructor takes, or None when it takes any (**kwargs)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "self" and p.name not in _OWNED]


def check_optimizer_args(cfg: Any, source: str = "config") -> None:
    """Raise ConfigError naming the key when `cfg.optimizer_args` cannot be given to `cfg.optimizer`."""
    name, args = cfg.optimizer, cfg.optimizer_args
    for key in args:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{source}: `optimizer_args` has a key {short_repr(key)} that is not a name.")
        if key in _OWNED:
            raise ConfigError(
                f"{source}: `optimizer_args.{key}` is set by {_OWNED[key]}; remove it from optimizer_args."
            )
    if not args or name not in _WHERE:
        return
    cls = optimizer_class(name)
    if cls is None:
        return  # the run says which package to install; the names cannot be checked without it
    accepted = _accepted(cls)
    if accepted is not None:
        for key in args:
            if key not in accepted:
                raise ConfigError(
                    f"{source}: `optimizer_args.{key}` is not an argument of {cls.__name__} "
                    f"(optimizer: {name}).{suggest(key, accepted)} It takes: {', '.join(accepted)}."
                )
    if name == "adamw8bit":
        return  # bitsandbytes builds its state on CUDA only; the names were checked
    _try_values(cfg, cls.__name__, source)


def _try_values(cfg: Any, class_name: str, source: str) -> None:
    """Build the optimizer as the run does (same arguments, same kernel choice) over one dummy parameter and take
    one step: its own checks of each value (some optimizers read theirs only in step()) run now, in
    microseconds, not after the model loaded and the latents were cached."""
    import torch

    # the run's own builder, imported here: the config package is loaded before (and without) the trainer
    from ..run.optim import build_optimizer

    probe = torch.zeros(1, requires_grad=True)
    try:
        optimizer = build_optimizer(cfg, [{"params": [probe]}], torch.device("cpu"))
        probe.grad = torch.ones(1)
        optimizer.step()
    except ARGUMENT_ERRORS as exc:
        raise ConfigError(
            f"{source}: `optimizer_args` {short_repr(cfg.optimizer_args)} are refused by {class_name} "
            f"(optimizer: {cfg.optimizer}): {str(exc)[:200]}. Fix or remove the value."
        ) from None
