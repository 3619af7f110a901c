"""Image training: `train(cfg)` turns a validated config into a kohya-format LoRA file.

Order of work: output folder -> dataset scan -> base model (frozen, on the CPU) -> buckets and latent cache (VAE
on the device) -> caption cache (text encoders on the device) -> denoiser on the device -> network ->
optimizer -> (resume) -> steps on the shared run loop (run/loop.py, with `ImageTask` below) -> final file,
sidecar, config, self-test.
"""

from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path
from typing import Any

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from ..config import TrainConfig
from ..errors import TrainingError
from ..run.events import EventCallback, EventSink, StopControl
from ..run.loop import RunLoop, check_finite_loss, run_session
from ..run.result import TrainResult
from ..run.state import (
    Progress,
)
from .batches import epoch_batches, shard, steps_per_epoch
from .ema import split_ema_tensors
from .run_parts import RunParts, build_parts

logger = logging.getLogger(__name__)

DIVERGED_ADVICE = "Lower learning_rate, use mixed_precision: bf16 or no instead of fp16, or check the images."


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # numpy is a dependency, but seeding must never be the reason a run fails
        pass


class ImageTask:
    """The image half of a run for the shared loop (run/loop.py): diffusion loss, validation, LoRA files."""

    def __init__(self, parts: RunParts, events: EventSink) -> None:
        self.p, self.cfg, self.events = parts, parts.cfg, events
        self.output_dir = parts.output_dir
        self.total_steps = parts.total_steps
        self.optimizer, self.scheduler = parts.optimizer, parts.scheduler
        self.is_main_process = parts.accelerator.is_main_process
        self.entries = parts.inputs.entries()
        self.loop: RunLoop | None = None  # set by train(): progress and last loss for the files written
        self._loss_sum = torch.zeros(())
        self._loss_count = 0

    # --- one optimizer step -------------------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[list]:
        cfg, acc = self.cfg, self.p.accelerator
        return epoch_batches(self.entries, cfg.batch_size, cfg.seed, epoch, world_size=acc.num_processes)

    def _micro_batch(self, entries: list, seed: int) -> torch.Tensor:
        p = self.p
        acc = p.accelerator
        rng = random.Random(seed)
        prepared = p.inputs.latents(p.base.vae, entries, rng)
        latents = torch.stack([x.latent for x in prepared]).to(acc.device)
        captions = [p.inputs.caption(e, rng) for e in entries]
        noise = p.draw_noise(tuple(latents.shape), seed)
        kwargs: dict[str, Any] = p.conditioning(prepared, captions, tuple(latents.shape))
        with acc.autocast():
            return p.module(latents, noise.noise.to(acc.device), noise.timesteps.to(acc.device), **kwargs)

    def optimizer_step(self, window: list[list], step: int) -> None:
        p, acc = self.p, self.p.accelerator
        step_seed = self.cfg.seed * 1_000_003 + step * 7919 + acc.process_index
        _seed_everything(step_seed)  # dropout and friends: reproducible after resume
        for j, global_batch in enumerate(window):
            entries = shard(global_batch, acc.process_index, acc.num_processes)
            sync = acc.no_sync(p.module) if j < len(window) - 1 else contextlib.nullcontext()
            with sync:
                loss = self._micro_batch(entries, step_seed * 31 + j) / len(window)
                acc.backward(loss)
            # stays on the device: a .cpu() here would wait for the GPU every step (synchronised in step_loss)
            self._loss_sum = self._loss_sum + loss.detach().float()
        if self.cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(p.trainable, self.cfg.max_grad_norm)
        p.optimizer.step()
        p.scheduler.step()
        p.optimizer.zero_grad(set_to_none=True)
        self._loss_count += 1

    def after_optimizer_step(self, step: int) -> None:
        self.p.progress_bar.update(1)
        if self.p.ema is not None:
            self.p.ema.update(step)

    # --- reports ---------------------------------------------------------------------------------------------------
    def step_loss(self, step: int) -> float:
        """Synchronised only on report steps (no per-step host sync), then checked."""
        acc = self.p.accelerator
        loss = float(acc.reduce(self._loss_sum.to(acc.device), "mean")) / max(1, self._loss_count)
        self._loss_sum, self._loss_count = torch.zeros(()), 0
        check_finite_loss(loss, step, self.output_dir, DIVERGED_ADVICE)
        return loss

    def step_report(self, step: int, loss: float) -> dict[str, Any]:
        lrs = [g["lr"] for g in self.p.optimizer.param_groups]
        self.p.log_scalars(step, loss, lrs)
        self.p.progress_bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lrs[0]:.2e}", refresh=False)
        return {"lr": lrs[0]}

    # --- validation --------------------------------------------------------------------------------------------------
    def evaluation_due(self, step: int, end_of_epoch: bool, at_end: bool) -> bool:
        return self.p.validator is not None and (step % self.cfg.validate_every_n_steps == 0 or at_end)

    def evaluate(self, step: int) -> float:
        with self.p.file_weights():  # the weights the LoRA files hold (EMA when it is on)
            return self.p.validator.evaluate()

    def report_evaluation(self, step: int, value: float, best: tuple[float, int] | None) -> None:
        best_loss, best_step = best or (None, None)
        self.p.log_validation(step, value)
        self.events.emit("validation", step=step, loss=value, best_step=best_step, best_loss=best_loss)

    def keep_best(self, value: float, step: int) -> None:
        if self.cfg.keep_best and self.is_main_process:
            self.p.write_lora(self.loop.progress, final=False, loss=self.loop.last_loss, best=value)

    def between_steps(self, step: int, at_end: bool) -> None:
        cfg = self.cfg
        if (
            cfg.sample_prompts
            and cfg.sample_every_n_steps
            and step % cfg.sample_every_n_steps == 0
            and not at_end
        ):
            self.p.sample(step, self.events)

    # --- saves ---------------------------------------------------------------------------------------------------
    def save_due(self, step: int, end_of_epoch: bool, epoch: int) -> bool:
        cfg = self.cfg
        due = bool(cfg.save_steps and step % cfg.save_steps == 0)
        return due or bool(
            end_of_epoch
            and cfg.save_every_n_epochs
            and epoch % cfg.save_every_n_epochs == 0  # epochs completed
        )

    def checkpoint_payload(self, progress: Progress) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict]:
        """A LoRA file for this step, then the weights (with the EMA copy) for the checkpoint."""
        p = self.p
        if not p.network.all_finite():
            raise TrainingError(
                f"LoRA weights contain NaN/inf at step {progress.step}; not saving over good checkpoints."
            )
        lora = p.write_lora(progress, final=False, loss=self.loop.last_loss)
        network = p.network.kohya_state_dict()
        if p.ema is not None:
            network.update(p.ema.state_dict())
        return network, {"network_fingerprint": p.network_fingerprint}, {"lora": str(lora)}

    def after_checkpoint(self) -> None:
        self.p.prune_intermediate_loras()

    def restore(self, weights: dict[str, torch.Tensor], extra: dict[str, Any], checkpoint: Path) -> None:
        if extra.get("network_fingerprint") != self.p.network_fingerprint:
            raise TrainingError(
                f"checkpoint {checkpoint} was made with different network settings "
                f"({extra.get('network_fingerprint')}); use a new output_dir or restore the old settings."
            )
        network, ema = split_ema_tensors(weights)
        self.p.network.load_kohya_state_dict(network)
        if self.p.ema is not None and not self.p.ema.load_state_dict(ema):
            logger.warning(
                "checkpoint %s has no EMA weights; the EMA starts from the resumed weights", checkpoint
            )

    def wait_for_everyone(self) -> None:
        self.p.accelerator.wait_for_everyone()


def total_steps_for(cfg: TrainConfig, n_batches: int) -> int:
    """max_train_steps, or epochs x optimizer steps per epoch."""
    if cfg.max_train_steps:
        return cfg.max_train_steps
    return cfg.epochs * steps_per_epoch(n_batches, cfg.gradient_accumulation_steps)


def train(
    cfg: TrainConfig, *, callbacks: list[EventCallback] | None = None, stop: StopControl | None = None
) -> TrainResult:
    """Run one training job described by `cfg`. Raises LoraScriptsError subclasses with actionable messages."""
    parts = build_parts(cfg, total_steps_for)
    try:
        with run_session(parts.output_dir, callbacks, stop, parts.accelerator.is_main_process) as (
            events,
            stop,
        ):
            parts.setup_rest(events)
            task = ImageTask(parts, events)
            run = task.loop = RunLoop(task, cfg, events, stop)
            run.maybe_resume()
            events.emit("started", **parts.describe(), start_step=run.progress.step)
            parts.progress_bar.update(run.progress.step)
            parts.module.train()
            # log lines (saves, samples) print above the bar instead of breaking its line
            with logging_redirect_tqdm():
                run.run()
            return parts.finish(run.progress, run.last_loss, events, run.tracker.best)
    finally:
        parts.close()
