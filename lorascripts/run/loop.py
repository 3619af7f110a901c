"""The one run loop of image and text LoRA training: resume, step cadence, reports, evaluation with early
stopping, periodic checkpoints with pruning, and the STOP control.

What differs between the tasks (how a batch becomes a loss, what a checkpoint holds besides the optimizer, how
an evaluation is scored, which file is the best one) is the task's: an object with the methods of `Task`. The
loop owns the order of things, which the exact-resume tests pin down: the optimizer step, the report, the
evaluation (before a save, so a checkpoint holds its best/patience), the task's extras (samples), the save.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch

from ..errors import StopRequested, TrainingError
from .early_stop import BestTracker
from .events import EventCallback, EventSink, StopControl, report_outcome
from .state import (
    Progress,
    clean_partial,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)

logger = logging.getLogger(__name__)


class Task(Protocol):
    """What a training task plugs into `RunLoop` (image: train/trainer.py, text: llm/train.py)."""

    output_dir: Path
    total_steps: int
    optimizer: Any
    scheduler: Any
    is_main_process: bool

    def epoch_batches(self, epoch: int) -> list[list]:
        """This epoch's micro-batches in order (the loop groups gradient_accumulation_steps of them)."""

    def optimizer_step(self, window: list[list], step: int) -> None:
        """Forward, backward and one optimizer + scheduler step over `window` micro-batches."""

    def after_optimizer_step(self, step: int) -> None:
        """Per-step bookkeeping before the report (progress bar, EMA)."""

    def step_loss(self, step: int) -> float:
        """The mean training loss since the last report (synchronised, checked)."""

    def step_report(self, step: int, loss: float) -> dict[str, Any]:
        """Log the step's scalars; return the task's extra fields of the `step` event (lr comes from here)."""

    def evaluation_due(self, step: int, end_of_epoch: bool, at_end: bool) -> bool:
        """Whether an evaluation runs after this step."""

    def evaluate(self, step: int) -> float:
        """Score the held-out data with the weights the saved files hold."""

    def report_evaluation(self, step: int, value: float, best: tuple[float, int] | None) -> None:
        """Emit and log the evaluation (image: `validation`, text: `eval`)."""

    def keep_best(self, value: float, step: int) -> None:
        """A new best evaluation: keep the best LoRA / adapter if the config asks for it."""

    def between_steps(self, step: int, at_end: bool) -> None:
        """Extras after the evaluation and before a save (image: preview samples)."""

    def save_due(self, step: int, end_of_epoch: bool, epoch: int) -> bool:
        """Whether a periodic save is due after this step."""

    def checkpoint_payload(self, progress: Progress) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict]:
        """(weights, checkpoint extra, extra `checkpoint` event fields); may write an intermediate file."""

    def after_checkpoint(self) -> None:
        """After the checkpoint was written and old ones pruned."""

    def restore(self, weights: dict[str, torch.Tensor], extra: dict[str, Any], checkpoint: Path) -> None:
        """Load the checkpoint's weights (and check they fit this run)."""

    def wait_for_everyone(self) -> None:
        """Barrier between processes (no-op in one process)."""


class RunLoop:
    """Progress, best/patience and timing of one run, driving a `Task` from resume to the last step."""

    def __init__(self, task: Task, cfg: Any, events: EventSink, stop: StopControl) -> None:
        self.task, self.cfg, self.events, self.stop = task, cfg, events, stop
        self.progress = Progress()
        self.tracker = BestTracker(cfg.early_stopping_patience)  # the rule both tasks share
        self.last_loss: float | None = None
        self.early_stopped = False
        self._started = time.time()
        self._first_step_at: float | None = None
        self._resumed_at = 0

    # --- resume ----------------------------------------------------------------------------------------------------
    def maybe_resume(self) -> None:
        """Continue from `resume: auto` (latest checkpoint) or an explicit checkpoint folder."""
        out = self.task.output_dir
        clean_partial(out)
        if self.cfg.resume == "none":
            return
        found = list_checkpoints(out) if self.cfg.resume == "auto" else [Path(self.cfg.resume)]
        if not found:
            logger.info("resume: auto found no checkpoint in %s; starting from step 0", out)
            return
        progress, weights, optimizer, scheduler, extra = load_checkpoint(found[-1])
        self.task.restore(weights, extra, found[-1])
        self.task.optimizer.load_state_dict(optimizer)
        self.task.scheduler.load_state_dict(scheduler)
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

    # --- after each step ------------------------------------------------------------------------------------------------
    def _report(self) -> None:
        """The `step` event every log_every_n_steps and at the last step (the loss is synchronised only then)."""
        step, total = self.progress.step, self.task.total_steps
        if step % self.cfg.log_every_n_steps and step != total:
            return
        loss = self.task.step_loss(step)
        self.last_loss = loss
        extra = self.task.step_report(step, loss)
        elapsed = time.time() - (self._first_step_at or self._started)
        done = step - self._resumed_at
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (total - step) / rate if rate else None
        self.events.emit(
            "step",
            step=step,
            total_steps=total,
            epoch=self.progress.epoch,
            loss=loss,
            it_per_s=round(rate, 4),
            eta_s=round(eta, 1) if eta is not None else None,
            **extra,
        )

    def _evaluate(self) -> None:
        """Evaluation, its event, the best file, early stopping."""
        step = self.progress.step
        value = self.task.evaluate(step)
        verdict = self.tracker.update(value, step)
        self.task.report_evaluation(step, value, self.tracker.best)
        if verdict.improved:
            self.task.keep_best(value, step)
        if verdict.stop:
            best_loss, best_step = self.tracker.best or (None, None)
            logger.info("early stop at step %d: best evaluation %s at step %s", step, best_loss, best_step)
            self.events.emit("early_stop", step=step, best_step=best_step, best_loss=best_loss)
            self.early_stopped = True

    def _after_step(self, end_of_epoch: bool) -> None:
        task, step = self.task, self.progress.step
        task.after_optimizer_step(step)
        self._report()
        at_end = step >= task.total_steps
        if task.evaluation_due(step, end_of_epoch, at_end):
            self._evaluate()  # before a save: the checkpoint holds this evaluation's best/patience
        task.between_steps(step, at_end)
        if task.save_due(step, end_of_epoch, self.progress.epoch) and not at_end:
            self.save_intermediate()
        if self.stop.requested:
            self.save_intermediate()
            raise StopRequested(
                f"training stopped at step {step} ({self.stop.reason}); "
                "run again with `resume: auto` to continue."
            )

    def save_intermediate(self) -> None:
        """A resumable checkpoint (and what the task writes with it); old ones beyond keep_last_n are removed."""
        task = self.task
        if task.is_main_process:
            weights, extra, fields = task.checkpoint_payload(self.progress)
            path = save_checkpoint(
                task.output_dir,
                self.progress,
                weights,
                task.optimizer,
                task.scheduler,
                extra={**extra, **self.tracker.state()},
            )
            prune_checkpoints(task.output_dir, self.cfg.keep_last_n)
            task.after_checkpoint()
            self.events.emit("checkpoint", step=self.progress.step, path=str(path), **fields)
        task.wait_for_everyone()

    # --- the loop --------------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Train until the last step (or an early stop), reporting, evaluating and saving along the way."""
        progress, accum = self.progress, self.cfg.gradient_accumulation_steps
        self._resumed_at = progress.step
        while progress.step < self.task.total_steps:
            batches = self.task.epoch_batches(progress.epoch)
            while progress.position < len(batches) and progress.step < self.task.total_steps:
                window = batches[progress.position : progress.position + accum]
                # the clock starts before the first step (after it, step 1 took "no time": the WebUI showed 915 it/s)
                self._first_step_at = self._first_step_at or time.time()
                self.task.optimizer_step(window, progress.step)
                progress.step += 1
                progress.position += len(window)
                end_of_epoch = progress.position >= len(batches)
                if end_of_epoch:
                    progress.epoch, progress.position = progress.epoch + 1, 0
                self._after_step(end_of_epoch)
                if end_of_epoch or self.early_stopped:
                    break
            if self.early_stopped:
                break


def check_finite_loss(loss: float, step: int, output_dir: Path, advice: str) -> None:
    """A NaN/inf loss ends the run with the last good checkpoint named."""
    if torch.isfinite(torch.tensor(loss)):
        return
    last = list_checkpoints(output_dir)
    raise TrainingError(
        f"loss became {loss} at step {step}: training diverged. "
        f"The last good checkpoint is {last[-1] if last else 'none (no save yet)'}. {advice}"
    )


@contextmanager
def run_session(
    output_dir: Path,
    callbacks: list[EventCallback] | None,
    stop: StopControl | None,
    main_process: bool = True,
) -> Iterator[tuple[EventSink, StopControl]]:
    """The events file, the STOP control (a stale STOP file removed) and the recorded outcome of one run."""
    events = EventSink(output_dir / "events.jsonl" if main_process else None, callbacks)
    if stop is None:
        stop = StopControl(output_dir)
        stop.clear_stale_file()  # a STOP file from an earlier run must not end this one at once
    with report_outcome(events):
        yield events, stop
