"""The check of `optimizer_args` against the optimizer at config load (the optimizers are in run/optimizers.py).

`optimizer_args` goes straight into a library constructor; unchecked, an unknown name is a TypeError from torch
minutes into a run (after the model loaded and latents were cached). Here it is checked when the config is read:
names against the constructor's signature, values by building the optimizer once over a one-element tensor.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from ..run.optimizers import ARGUMENT_ERRORS, OPTIMIZERS, build_optimizer, optimizer_class
from .validate import short_repr, suggest

# keys the config sets itself: the run passes them, so a second copy in optimizer_args is a TypeError
_OWNED = {"params": "the LoRA parameters", "lr": "`learning_rate`"}


def _accepted(cls: type) -> list[str] | None:
    """Keyword names the constructor takes, or None when it takes any (**kwargs)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "self" and p.name not in _OWNED]


def check_optimizer_args(cfg: Any) -> None:
    """Raise ConfigError naming the key when `cfg.optimizer_args` cannot be given to `cfg.optimizer`."""
    name, args = cfg.optimizer, cfg.optimizer_args
    for key in args:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"`optimizer_args` has a key {short_repr(key)} that is not a name.")
        if key in _OWNED:
            raise ConfigError(
                f"`optimizer_args.{key}` is set by {_OWNED[key]}; remove it from optimizer_args."
            )
    if not args or name not in OPTIMIZERS:
        return
    cls = optimizer_class(name)
    if cls is None:
        return  # the run says which package to install; the names cannot be checked without it
    accepted = _accepted(cls)
    if accepted is not None:
        for key in args:
            if key not in accepted:
                raise ConfigError(
                    f"`optimizer_args.{key}` is not an argument of {cls.__name__} "
                    f"(optimizer: {name}).{suggest(key, accepted)} It takes: {', '.join(accepted)}."
                )
    if OPTIMIZERS[name].needs_cuda:
        return  # bitsandbytes builds its state on CUDA only; the names were checked
    _try_values(cfg, cls.__name__)


def _try_values(cfg: Any, class_name: str) -> None:
    """Build the optimizer as the run does (same arguments, same kernel choice) over one dummy parameter and take
    one step: its own checks of each value (some optimizers read theirs only in step()) run now, in
    microseconds, not after the model loaded and the latents were cached."""
    import torch

    probe = torch.zeros(1, requires_grad=True)
    try:
        optimizer = build_optimizer(cfg, [{"params": [probe]}], torch.device("cpu"))
        probe.grad = torch.ones(1)
        optimizer.step()
    except ARGUMENT_ERRORS as exc:
        raise ConfigError(
            f"`optimizer_args` {short_repr(cfg.optimizer_args)} are refused by {class_name} "
            f"(optimizer: {cfg.optimizer}): {str(exc)[:200]}. Fix or remove the value."
        ) from None
