"""Text-LoRA training: JSONL -> peft adapter, with eval loss, early stopping, events, checkpoints and resume.

The loop is hand-written (not transformers.Trainer) for two reasons: packed rows need the block-diagonal mask
and per-token loss of batches.py, and the run must speak the same event/STOP/checkpoint protocol as the image
trainer so every host follows it the same way.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config.llm import LLMConfig
from ..errors import ModelError, StopRequested
from ..fileio import ordinary_permissions
from ..run.early_stop import BestTracker
from ..run.events import EventCallback, EventSink, StopControl, report_outcome
from ..run.optim import adamw_kernel
from ..run.precision import resolve_precision
from ..run.state import (
    Progress,
    clean_partial,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from .batches import as_rows, collate, epoch_batches, token_loss
from .data import IGNORE, chat_template, encode, read_jsonl, truncation_report
from .model import attach_lora, load_causal_lm, load_tokenizer
from .preference import attach_reference, pair_loss, preference_datasets
from .serving import check_adapter
from .split import train_and_held_out

logger = logging.getLogger(__name__)


@dataclass
class LLMResult:
    adapter_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None
    merged_dir: Path | None = None
    serving: dict[str, Any] | None = None  # the vLLM/TGI check of the adapter (serving.ServingReport.to_dict)


def _datasets(cfg: LLMConfig, tokenizer: Any) -> tuple[list, list]:
    """Encoded training and eval rows (held-out split by seed unless eval_data is given)."""
    examples, held = train_and_held_out(cfg, read_jsonl)
    template = chat_template(tokenizer, cfg.chat_template)
    encoded = [encode(e, tokenizer, cfg.max_seq_length, template, cfg.train_on_prompt) for e in examples]
    held_encoded = [encode(e, tokenizer, cfg.max_seq_length, template, cfg.train_on_prompt) for e in held]
    warning = truncation_report(encoded + held_encoded, cfg.max_seq_length)
    if warning:
        logger.warning(warning)
    return (
        as_rows(encoded, cfg.max_seq_length, cfg.packing),
        as_rows(held_encoded, cfg.max_seq_length, cfg.packing),
    )


def _scheduler(cfg: LLMConfig, optimizer: torch.optim.Optimizer, total: int) -> Any:
    from transformers import get_scheduler

    return get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total
    )


class LLMRun:
    """One run: model, data, optimizer and the loop state."""

    def __init__(self, cfg: LLMConfig, events: EventSink, stop: StopControl) -> None:
        self.cfg, self.events, self.stop = cfg, events, stop
        self.out = Path(cfg.output_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision = resolve_precision(cfg, self.device)
        self.autocast = precision.autocast_dtype
        torch.manual_seed(cfg.seed)
        self.tokenizer = load_tokenizer(cfg.base_model, cfg.allow_remote_code)
        self.preference = cfg.objective != "sft"
        datasets = preference_datasets if self.preference else _datasets
        self.train_rows, self.eval_rows = datasets(cfg, self.tokenizer)
        base = load_causal_lm(cfg.base_model, precision.weight_dtype, cfg.allow_remote_code, cfg.load_in_4bit)
        if cfg.gradient_checkpointing:
            base.gradient_checkpointing_enable()
        self.model = attach_lora(base, cfg).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        for p in self.params:
            p.data = p.data.float()  # trainable LoRA weights stay fp32 whatever the base dtype
        self.reference_s = 0.0  # time spent on the reference log-probs (DPO), for throughput figures
        if cfg.objective == "dpo":
            started, pad = time.perf_counter(), self.tokenizer.pad_token_id
            pairs = self.train_rows + self.eval_rows
            attach_reference(self.model, pairs, pad, cfg.batch_size, self.autocast, cfg.packing)
            self.reference_s = time.perf_counter() - started
        self.metrics: dict[str, float] = {}  # preference metrics of the last step (margin, accuracy)
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.learning_rate, **adamw_kernel({"weight_decay": cfg.weight_decay}, self.device)
        )
        per_epoch = math.ceil(len(self.train_rows) / (cfg.batch_size * cfg.gradient_accumulation_steps))
        self.total = cfg.max_train_steps or per_epoch * cfg.epochs
        self.scheduler = _scheduler(cfg, self.optimizer, self.total)
        self.progress = Progress()
        self.tracker = BestTracker(cfg.early_stopping_patience)  # the rule shared with the image trainer
        self.first_step = 0
        self.tokens_seen = 0  # real (non-padding) tokens trained on, for throughput figures
        self.writer: Any = None

    # --- state ------------------------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(self.model).items()}

    def maybe_resume(self) -> None:
        from peft import set_peft_model_state_dict

        clean_partial(self.out)
        if self.cfg.resume == "none":
            return
        found = [Path(self.cfg.resume)] if self.cfg.resume != "auto" else list_checkpoints(self.out)[-1:]
        if not found:
            return
        progress, weights, optimizer, scheduler, extra = load_checkpoint(found[-1])
        set_peft_model_state_dict(self.model, weights)
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(scheduler)
        self.progress = progress
        self.tracker.restore(extra)
        self.events.emit("resumed", step=progress.step, checkpoint=str(found[-1]))

    def save(self) -> Path:
        path = save_checkpoint(
            self.out,
            self.progress,
            self.adapter_state(),
            self.optimizer,
            self.scheduler,
            self.tracker.state(),
        )
        prune_checkpoints(self.out, self.cfg.keep_last_n)
        self.events.emit("checkpoint", step=self.progress.step, path=str(path))
        return path

    # --- steps ------------------------------------------------------------------------------------------
    def _loss(self, rows: list, metrics: dict[str, float] | None = None) -> tuple[torch.Tensor, int]:
        """(loss summed over the micro-batch, what it is averaged over: labelled tokens, or pairs); preference
        metrics are added to `metrics` weighted by pairs."""
        pad = self.tokenizer.pad_token_id
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            if self.preference:
                cfg = self.cfg
                loss, found = pair_loss(
                    self.model, rows, cfg.objective, cfg.preference_beta, pad, cfg.packing
                )
                for key, value in found.items():
                    if metrics is not None:
                        metrics[key] = metrics.get(key, 0.0) + value * len(rows)
                return loss, len(rows)
            batch = {k: v.to(self.device) for k, v in collate(rows, pad).items()}
            return token_loss(self.model, batch)

    def _count(self, window: list[list]) -> int:
        """What a step's loss is averaged over: pairs (preference) or labelled tokens (SFT)."""
        if self.preference:
            return sum(len(rows) for rows in window)
        return sum(sum(1 for r in rows for lab in r.labels[1:] if lab != IGNORE) for rows in window)

    def step(self, window: list[list]) -> float:
        """One optimizer step over `window` micro-batches; returns the mean loss (per token, or per pair)."""
        tokens = self._count(window)
        self.tokens_seen += sum(len(r.input_ids) for rows in window for r in rows)
        total, sums = 0.0, {}
        for rows in window:
            loss, _ = self._loss(rows, sums)
            (loss / max(1, tokens)).backward()
            total += float(loss.detach())
        self.metrics = {k: v / max(1, tokens) for k, v in sums.items()}
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total / max(1, tokens)

    @torch.no_grad()
    def evaluate(self, metrics: dict[str, float] | None = None) -> float | None:
        """Mean eval loss; preference metrics (means over the eval pairs) go into `metrics`."""
        if not self.eval_rows:
            return None
        self.model.eval()
        total, count, sums = 0.0, 0, {}
        for start in range(0, len(self.eval_rows), self.cfg.batch_size):
            loss, n = self._loss(self.eval_rows[start : start + self.cfg.batch_size], sums)
            total, count = total + float(loss), count + n
        self.model.train()
        if metrics is not None:
            metrics.update({f"eval_{k}": v / max(1, count) for k, v in sums.items()})
        return total / max(1, count)


def _windows(run: LLMRun) -> list[list[list]]:
    """This epoch's optimizer steps: lists of micro-batches of rows."""
    cfg = run.cfg
    batches = epoch_batches(run.train_rows, cfg.batch_size, cfg.seed, run.progress.epoch)
    accum = cfg.gradient_accumulation_steps
    return [batches[s : s + accum] for s in range(0, len(batches), accum)]


def _after_step(run: LLMRun, loss: float, started: float, end_of_epoch: bool) -> bool:
    """Report, evaluate, save; True when early stopping ends the run."""
    cfg, step = run.cfg, run.progress.step
    if step % cfg.log_every_n_steps == 0 or step == run.total:
        rate = (step - run.first_step) / max(1e-9, time.time() - started)
        eta = (run.total - step) / rate if rate else None
        run.events.emit(
            "step",
            step=step,
            total=run.total,
            epoch=run.progress.epoch,
            loss=loss,
            lr=run.scheduler.get_last_lr()[0],
            it_per_s=round(rate, 4),
            tokens_seen=run.tokens_seen,
            eta_s=round(eta, 1) if eta else None,
            **run.metrics,
        )
        if run.writer:
            run.writer.add_scalar("loss/train", loss, step)
    due_eval = (cfg.eval_every_n_steps and step % cfg.eval_every_n_steps == 0) or (
        not cfg.eval_every_n_steps and end_of_epoch
    )
    if due_eval and run.eval_rows:
        stop_early = _eval_and_track(run)
        if stop_early:
            return True
    if cfg.save_steps and step % cfg.save_steps == 0 and step < run.total:
        run.save()
    if run.stop.requested:
        run.save()
        raise StopRequested(
            f"training stopped at step {step} ({run.stop.reason}); run again with resume: auto."
        )
    return False


def _eval_and_track(run: LLMRun) -> bool:
    metrics: dict[str, float] = {}
    value = run.evaluate(metrics)
    step = run.progress.step
    run.events.emit("eval", step=step, eval_loss=value, **metrics)
    if run.writer:
        run.writer.add_scalar("loss/eval", value, step)
    verdict = run.tracker.update(value, step)
    if verdict.improved and run.cfg.early_stopping_patience:
        run.model.save_pretrained(str(run.out / "best"))
        ordinary_permissions(run.out / "best")
    if verdict.stop:
        best_loss, best_step = run.tracker.best
        run.events.emit("early_stop", step=step, best_step=best_step, best_eval_loss=best_loss)
    return verdict.stop


def _loop(run: LLMRun) -> float | None:
    run.model.train()
    run.first_step, started, loss = run.progress.step, time.time(), None
    while run.progress.step < run.total:
        windows = _windows(run)
        while run.progress.position < len(windows) and run.progress.step < run.total:
            loss = run.step(windows[run.progress.position])
            run.progress.step += 1
            run.progress.position += 1
            end = run.progress.position >= len(windows)
            if end:
                run.progress.epoch, run.progress.position = run.progress.epoch + 1, 0
            if _after_step(run, loss, started, end):
                return loss
            if end:
                break
    return loss


def _write_outputs(run: LLMRun, loss: float | None) -> LLMResult:
    """Adapter folder (best one when early stopping kept one), resolved config, optional merged model."""
    from ..config.load import dump_config

    cfg = run.cfg
    final = run.out / cfg.output_name
    tmp = run.out / f".{cfg.output_name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    best = run.out / "best"
    if cfg.early_stopping_patience and best.is_dir():
        shutil.copytree(best, tmp)
    else:
        run.model.save_pretrained(str(tmp))
    run.tokenizer.save_pretrained(str(tmp))
    (tmp / "lorascripts_config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    ordinary_permissions(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    merged = None
    if cfg.merge_full_model:
        from .model import load_for_generation

        model, tokenizer = load_for_generation(cfg.base_model, str(final), cfg.allow_remote_code)
        merged = run.out / f"{cfg.output_name}-merged"
        model.merge_and_unload().save_pretrained(str(merged), safe_serialization=True)
        tokenizer.save_pretrained(str(merged))
        ordinary_permissions(merged)
    eval_loss = run.tracker.best[0] if run.tracker.best else run.evaluate()
    return LLMResult(final, run.progress.step, loss, eval_loss, merged, _serving_check(run, final))


def _serving_check(run: LLMRun, adapter: Path) -> dict[str, Any] | None:
    """Will vLLM and TGI serve the adapter? Logged and sent as an event; never fails the finished run."""
    try:
        report = check_adapter(adapter, base=run.cfg.base_model)
    except ModelError as exc:
        logger.warning("serving check skipped: %s", exc)
        return None
    (logger.info if report.ok else logger.warning)("%s", report.format())
    run.events.emit("serving_check", **report.to_dict())
    return report.to_dict()


def train_llm(
    cfg: LLMConfig, callbacks: list[EventCallback] | None = None, stop: StopControl | None = None
) -> LLMResult:
    """Train a text LoRA; events go to <output_dir>/events.jsonl and the callbacks."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    events = EventSink(out / "events.jsonl", callbacks)
    if stop is None:
        stop = StopControl(out)
        stop.clear_stale_file()
    with report_outcome(events):
        run = LLMRun(cfg, events, stop)
        run.maybe_resume()
        if cfg.logging:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(str(out / "logs"))
        events.emit(
            "started",
            total_steps=run.total,
            start_step=run.progress.step,
            rows=len(run.train_rows),
            eval_rows=len(run.eval_rows),
            objective=cfg.objective,
            reference_s=round(run.reference_s, 3),
        )
        loss = _loop(run)
        result = _write_outputs(run, loss)
        events.emit(
            "finished",
            adapter=str(result.adapter_dir),
            steps=result.steps,
            loss=loss,
            eval_loss=result.eval_loss,
        )
        return result
