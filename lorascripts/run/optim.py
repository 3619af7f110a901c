"""The optimizer and learning-rate schedule of a run (image or text), built from the registry in optimizers.py."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import ConfigError
from .optimizers import ARGUMENT_ERRORS, build_optimizer, optimizer_kwargs

logger = logging.getLogger(__name__)


def optimizer_label(optimizer: torch.optim.Optimizer, cfg: Any) -> str:
    """kohya's `ss_optimizer`: the class path of the optimizer that ran, then its arguments in parentheses as
    `k=v` joined by commas (`torch.optim.adamw.AdamW(weight_decay=0.01)`), like kohya's `--optimizer_args`."""
    cls = type(getattr(optimizer, "optimizer", optimizer))  # accelerate wraps the torch optimizer
    args = ",".join(f"{k}={v}" for k, v in optimizer_kwargs(cfg).items())
    return f"{cls.__module__}.{cls.__name__}" + (f"({args})" if args else "")


def create_optimizer(cfg: Any, param_groups: list[dict], device: torch.device) -> torch.optim.Optimizer:
    """The optimizer named in the config, with its extra arguments; clear errors when it cannot run here."""
    try:
        return build_optimizer(cfg, param_groups, device)
    except ARGUMENT_ERRORS as exc:
        # the boundary where optimizer_args enter a library: its complaint, named as the key the user wrote
        raise ConfigError(
            f"`optimizer_args` {cfg.optimizer_args!r} are refused by optimizer {cfg.optimizer}: {str(exc)[:200]}."
        ) from None


def warmup_steps(cfg: Any, total_steps: int) -> int:
    """lr_warmup_steps as a step count (values below 1 are a fraction of the run)."""
    value = cfg.lr_warmup_steps
    return int(round(value * total_steps)) if 0 < value < 1 else int(value)


def create_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """A diffusers/transformers LR schedule stepping once per optimizer step."""
    from diffusers.optimization import get_scheduler

    warmup = warmup_steps(cfg, total_steps)
    if cfg.lr_scheduler == "constant" and warmup:
        logger.info("lr_warmup_steps=%d with a constant schedule: using constant_with_warmup", warmup)
        name = "constant_with_warmup"
    else:
        name = cfg.lr_scheduler
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total_steps,
        num_cycles=cfg.lr_scheduler_num_cycles,
    )
