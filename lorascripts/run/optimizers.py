"""The optimizer registry: each `optimizer:` name with its class, the package it needs, how a run builds it and
how much state it keeps per trainable parameter (for the pre-flight memory estimate).

Image and text training, the config-load probe of `optimizer_args` (config/optimizers.py) and the estimate
(perf/estimate.py) all read this one table; adding an optimizer is one entry here.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

# What a library raises for a bad keyword value (`betas: []` is an IndexError inside AdamW, `betas: {}` a
# KeyError): at the boundary where optimizer_args enter a library, each becomes a ConfigError naming the key.
ARGUMENT_ERRORS = (TypeError, ValueError, RuntimeError, AssertionError, KeyError, IndexError)

Factory = Callable[[type, list, float, dict[str, Any], Any], Any]


def adamw_kernel(args: dict[str, Any], device: Any) -> dict[str, Any]:
    """AdamW arguments with torch's fused kernel chosen unless the user picked `fused` or `foreach` themselves.

    One fused kernel for all LoRA tensors instead of ~10 small operators per tensor: 13% of the toy model's
    CPU step (264 tensors); the maths is the same AdamW.
    """
    if "fused" in args or "foreach" in args or device.type not in ("cpu", "cuda"):
        return dict(args)
    return {**args, "fused": True}


def _plain(cls: type, params: list, lr: float, args: dict[str, Any], device: Any) -> Any:
    return cls(params, lr=lr, **args)


def _adamw(cls: type, params: list, lr: float, args: dict[str, Any], device: Any) -> Any:
    return cls(params, lr=lr, **adamw_kernel(args, device))


def _prodigy(cls: type, params: list, lr: float, args: dict[str, Any], device: Any) -> Any:
    if lr < 0.1:
        logger.warning("Prodigy usually wants learning_rate: 1.0 (it finds the step size); got %g", lr)
    return cls(params, lr=lr, **args)


@dataclass(frozen=True)
class OptimizerSpec:
    """One `optimizer:` name: where its class lives, how a run builds it, and its state size."""

    module: str
    attr: str
    package: str  # the pip package to install when it is missing
    state_bytes_per_param: float  # bytes of optimizer state per trainable (fp32) parameter
    build: Factory = _plain
    defaults: dict[str, Any] = field(default_factory=dict)  # arguments we pass unless the user sets them
    needs_cuda: bool = False


OPTIMIZERS: dict[str, OptimizerSpec] = {
    # two fp32 moments
    "adamw": OptimizerSpec("torch.optim", "AdamW", "torch", 8, _adamw),
    # two 8-bit moments + one fp32 absmax per 256-value block each (bitsandbytes' block-wise quantisation);
    # bitsandbytes 0.50 runs them on the CPU too (tests/test_flux_memory.py)
    "adamw8bit": OptimizerSpec("bitsandbytes.optim", "AdamW8bit", "bitsandbytes", 2 + 2 * 4 / 256),
    # moments, the initial weights and the running sum s: four fp32 copies
    "prodigy": OptimizerSpec("prodigyopt", "Prodigy", "prodigyopt", 16, _prodigy),
    # factored second moment (rows + columns, about one fp32 copy for LoRA's thin matrices), no first moment;
    # with an explicit learning rate, as kohya runs it
    "adafactor": OptimizerSpec(
        "transformers.optimization",
        "Adafactor",
        "transformers",
        4,
        defaults={"relative_step": False, "scale_parameter": False, "warmup_init": False},
    ),
}


def optimizer_names() -> tuple[str, ...]:
    """The names `optimizer:` accepts."""
    return tuple(OPTIMIZERS)


def state_bytes_per_param(name: str) -> float:
    """Bytes of optimizer state per trainable parameter (AdamW's when the name is unknown)."""
    return OPTIMIZERS.get(name, OPTIMIZERS["adamw"]).state_bytes_per_param


def library_defaults(name: str) -> dict[str, Any]:
    """Arguments we pass to `name` unless the user sets them."""
    spec = OPTIMIZERS.get(name)
    return dict(spec.defaults) if spec else {}


def optimizer_class(name: str) -> type | None:
    """The optimizer class for `optimizer: name`, or None when its package is not installed."""
    spec = OPTIMIZERS[name]
    if importlib.util.find_spec(spec.package) is None:
        return None
    return getattr(importlib.import_module(spec.module), spec.attr)


def optimizer_kwargs(cfg: Any) -> dict[str, Any]:
    """The keyword arguments the config gives the optimizer besides the learning rate (the kernel choice of
    `adamw_kernel` is not one: same maths on every device)."""
    return {"weight_decay": cfg.weight_decay, **library_defaults(cfg.optimizer), **cfg.optimizer_args}


def build_optimizer(cfg: Any, param_groups: list[dict], device: Any) -> Any:
    """The optimizer exactly as a run builds it (the config-load probe builds the same); a package it needs but
    that is missing is a ConfigError saying what to install. Library errors about the arguments pass through."""
    name = cfg.optimizer
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}.")
    spec = OPTIMIZERS[name]
    if spec.needs_cuda and device.type != "cuda":
        raise ConfigError(
            f"optimizer {name} needs a CUDA GPU ({spec.package}). On this machine use `optimizer: adamw`."
        )
    cls = optimizer_class(name)
    if cls is None:
        raise ConfigError(
            f"optimizer {name} needs {spec.package}: `pip install {spec.package}`, or use adamw."
        )
    return spec.build(cls, param_groups, cfg.learning_rate, optimizer_kwargs(cfg), device)
