"""The training loop: `train(cfg)` turns a validated config into a kohya-format LoRA file.

Order of work: output folder -> dataset scan -> base model -> buckets and latent cache -> network ->
optimizer -> (resume) -> steps with saves, samples, events -> final file, sidecar, config, self-test.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from ..config import TrainConfig
from ..errors import StopRequested, TrainingError
from ..run.early_stop import BestTracker
from ..run.events import EventCallback, EventSink, StopControl, report_outcome
from ..run.result import TrainResult
from ..run.state import (
    Progress,
    clean_partial,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from .batches import epoch_batches, shard, steps_per_epoch
from .ema import split_ema_tensors
from .run_parts import RunParts, build_parts

logger = logging.getLogger(__name__)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # numpy is a dependency, but seeding must never be the reason a run fails
        pass


class TrainingRun:
    """State of one run between setup and the final save; each method is one phase of the loop."""

    def __init__(self, parts: RunParts, events: EventSink, stop: StopControl) -> None:
        self.p = parts
        self.cfg: TrainConfig = parts.cfg
        self.events = events
        self.stop = stop
        self.progress = Progress()
        self.last_loss: float | None = None
        self._loss_sum = torch.zeros(())
        self._loss_count = 0
        self._started = time.time()
        self._first_step_at: float | None = None
        self.tracker = BestTracker(self.cfg.early_stopping_patience)  # the rule shared with the text trainer
        self.early_stopped = False

    # --- resume ----------------------------------------------------------------------------------------------------
    def maybe_resume(self) -> None:
        """Continue from `resume: auto` (latest checkpoint) or an explicit checkpoint folder."""
        cfg, out = self.cfg, self.p.output_dir
        clean_partial(out)
        if cfg.resume == "none":
            return
        found = list_checkpoints(out) if cfg.resume == "auto" else [Path(cfg.resume)]
        if not found:
            logger.info("resume: auto found no checkpoint in %s; starting from step 0", out)
            return
        progress, network, optimizer, scheduler, extra = load_checkpoint(found[-1])
        if extra.get("network_fingerprint") != self.p.network_fingerprint:
            raise TrainingError(
                f"checkpoint {found[-1]} was made with different network settings ({extra.get('network_fingerprint')}); "
                "use a new output_dir or restore the old settings."
            )
        network, ema = split_ema_tensors(network)
        self.p.network.load_kohya_state_dict(network)
        self.p.optimizer.load_state_dict(optimizer)
        self.p.scheduler.load_state_dict(scheduler)
        if self.p.ema is not None and not self.p.ema.load_state_dict(ema):
            logger.warning(
                "checkpoint %s has no EMA weights; the EMA starts from the resumed weights", found[-1]
            )
        self.tracker.restore(extra)
        self.progress = progress
        logger.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            found[-1].name,
            progress.step,
            progress.epoch,
            progress.position,
        )
        self.events.emit("resumed", step=progress.step, checkpoint=str(found[-1]))

    # --- one optimizer step -------------------------------------------------------------------------------------------
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

    def _optimizer_step(self, window: list[list]) -> None:
        p, acc = self.p, self.p.accelerator
        step_seed = self.cfg.seed * 1_000_003 + self.progress.step * 7919 + acc.process_index
        _seed_everything(step_seed)  # dropout and friends: reproducible after resume
        for j, global_batch in enumerate(window):
            entries = shard(global_batch, acc.process_index, acc.num_processes)
            sync = acc.no_sync(p.module) if j < len(window) - 1 else contextlib.nullcontext()
            with sync:
                loss = self._micro_batch(entries, step_seed * 31 + j) / len(window)
                acc.backward(loss)
            # stays on the device: a .cpu() here would wait for the GPU every step (synchronised in _log_step)
            self._loss_sum = self._loss_sum + loss.detach().float()
        if self.cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(p.trainable, self.cfg.max_grad_norm)
        p.optimizer.step()
        p.scheduler.step()
        p.optimizer.zero_grad(set_to_none=True)
        self._loss_count += 1

    # --- bookkeeping after a step ------------------------------------------------------------------------------------------
    def _log_step(self) -> None:
        """Synchronise the loss only every log_every_n_steps (no per-step host sync), check it, report it."""
        cfg, step = self.cfg, self.progress.step
        if step % cfg.log_every_n_steps and step != self.p.total_steps:
            return
        loss_t = self.p.accelerator.reduce(self._loss_sum.to(self.p.accelerator.device), "mean")
        loss = float(loss_t) / max(1, self._loss_count)
        self._loss_sum, self._loss_count = torch.zeros(()), 0
        if not torch.isfinite(torch.tensor(loss)):
            last = list_checkpoints(self.p.output_dir)
            raise TrainingError(
                f"loss became {loss} at step {step}: training diverged. "
                f"The last good checkpoint is {last[-1] if last else 'none (no save yet)'}. "
                "Lower learning_rate, use mixed_precision: bf16 or no instead of fp16, or check the images."
            )
        self.last_loss = loss
        lrs = [g["lr"] for g in self.p.optimizer.param_groups]
        self.p.log_scalars(step, loss, lrs)
        elapsed = time.time() - (self._first_step_at or self._started)
        done = step - self._resumed_at
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (self.p.total_steps - step) / rate if rate else None
        self.p.progress_bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lrs[0]:.2e}", refresh=False)
        self.events.emit(
            "step",
            step=step,
            total=self.p.total_steps,
            epoch=self.progress.epoch,
            loss=loss,
            lr=lrs[0],
            it_per_s=round(rate, 4),
            eta_s=round(eta, 1) if eta is not None else None,
        )

    def _validate(self) -> None:
        """Validation loss (with the weights the LoRA files hold), its event, the best LoRA, early stopping."""
        p, step = self.p, self.progress.step
        with p.file_weights():
            value = p.validator.evaluate()
        verdict = self.tracker.update(value, step)
        best_loss, best_step = self.tracker.best or (None, None)
        p.log_validation(step, value)
        self.events.emit("validation", step=step, loss=value, best_step=best_step, best_loss=best_loss)
        if verdict.improved and self.cfg.keep_best and p.accelerator.is_main_process:
            p.write_lora(self.progress, final=False, loss=self.last_loss, best=value)
        if verdict.stop:
            logger.info(
                "early stop at step %d: best validation loss %.5f at step %d", step, best_loss, best_step
            )
            self.events.emit("early_stop", step=step, best_step=best_step, best_loss=best_loss)
            self.early_stopped = True

    def _after_step(self, end_of_epoch: bool) -> None:
        cfg, step = self.cfg, self.progress.step
        if self.p.ema is not None:
            self.p.ema.update(step)
        self._log_step()
        at_end = step >= self.p.total_steps
        if self.p.validator is not None and (step % cfg.validate_every_n_steps == 0 or at_end):
            self._validate()  # before a save: the checkpoint holds this evaluation's best/patience
        if (
            cfg.sample_prompts
            and cfg.sample_every_n_steps
            and step % cfg.sample_every_n_steps == 0
            and not at_end
        ):
            self.p.sample(step, self.events)
        due = bool(cfg.save_steps and step % cfg.save_steps == 0)
        due |= bool(
            end_of_epoch
            and cfg.save_every_n_epochs
            and (self.progress.epoch + 1) % cfg.save_every_n_epochs == 0
        )
        if due and not at_end:
            self.save_intermediate()
        if self.stop.requested:
            self.save_intermediate()
            raise StopRequested(
                f"training stopped at step {step} ({self.stop.reason}); "
                "run again with `resume: auto` to continue."
            )

    def save_intermediate(self) -> None:
        """A LoRA file for this step plus a resumable checkpoint; old ones beyond keep_last_n are removed."""
        p, step = self.p, self.progress.step
        if p.accelerator.is_main_process:
            if not p.network.all_finite():
                raise TrainingError(
                    f"LoRA weights contain NaN/inf at step {step}; not saving over good checkpoints."
                )
            lora = p.write_lora(self.progress, final=False, loss=self.last_loss)
            network = p.network.kohya_state_dict()
            if p.ema is not None:
                network.update(p.ema.state_dict())
            ckpt = save_checkpoint(
                p.output_dir,
                self.progress,
                network,
                p.optimizer,
                p.scheduler,
                extra={"network_fingerprint": p.network_fingerprint, **self.tracker.state()},
            )
            prune_checkpoints(p.output_dir, self.cfg.keep_last_n)
            p.prune_intermediate_loras()
            self.events.emit("checkpoint", step=step, path=str(ckpt), lora=str(lora))
        p.accelerator.wait_for_everyone()

    # --- the loop --------------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Train until max steps, saving, sampling and reporting along the way."""
        p, cfg = self.p, self.cfg
        entries = p.inputs.entries()
        accum = cfg.gradient_accumulation_steps
        self._resumed_at = self.progress.step
        p.progress_bar.update(self.progress.step)
        p.module.train()
        while self.progress.step < p.total_steps:
            batches = epoch_batches(
                entries, cfg.batch_size, cfg.seed, self.progress.epoch, world_size=p.accelerator.num_processes
            )
            while self.progress.position < len(batches) and self.progress.step < p.total_steps:
                window = batches[self.progress.position : self.progress.position + accum]
                # the clock starts before the first step (after it, step 1 took "no time": the WebUI showed 915 it/s)
                self._first_step_at = self._first_step_at or time.time()
                self._optimizer_step(window)
                self.progress.step += 1
                self.progress.position += len(window)
                p.progress_bar.update(1)
                end_of_epoch = self.progress.position >= len(batches)
                if end_of_epoch:
                    self.progress.epoch += 1
                    self.progress.position = 0
                self._after_step(end_of_epoch)
                if end_of_epoch or self.early_stopped:
                    break
            if self.early_stopped:
                break


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
    events = EventSink(
        parts.output_dir / "events.jsonl" if parts.accelerator.is_main_process else None, callbacks
    )
    if stop is None:
        stop = StopControl(parts.output_dir)
        stop.clear_stale_file()  # a STOP file from an earlier run must not end this one at once
    try:
        with report_outcome(events):
            parts.setup_rest(events)
            run = TrainingRun(parts, events, stop)
            run.maybe_resume()
            events.emit("started", **parts.describe(), start_step=run.progress.step)
            # log lines (saves, samples) print above the bar instead of breaking its line
            with logging_redirect_tqdm():
                run.run()
            return parts.finish(run.progress, run.last_loss, events, run.tracker.best)
    finally:
        parts.close()
