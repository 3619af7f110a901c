"""Text-LoRA training: JSONL -> peft adapter, with eval loss, early stopping, events, checkpoints and resume.

`TextTask` plugs the text model into the run loop shared with image training (run/loop.py) rather than
transformers.Trainer, for two reasons: packed rows need the block-diagonal mask and per-token loss of
batches.py, and the run must speak the same event/STOP/checkpoint protocol as the image trainer so every host
follows it the same way.
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
from ..errors import ModelError
from ..fileio import ordinary_permissions
from ..run.events import EventCallback, EventSink, StopControl
from ..run.loop import RunLoop, run_session
from ..run.optim import create_optimizer, create_scheduler
from ..run.precision import resolve_precision
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


class TextTask:
    """The text half of a run for the shared loop (run/loop.py): model, data, optimizer, token/pair losses."""

    is_main_process = True

    def __init__(self, cfg: LLMConfig, events: EventSink) -> None:
        self.cfg, self.events = cfg, events
        self.out = self.output_dir = Path(cfg.output_dir)
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
        self.optimizer = create_optimizer(cfg, [{"params": self.params}], self.device)
        per_epoch = math.ceil(len(self.train_rows) / (cfg.batch_size * cfg.gradient_accumulation_steps))
        self.total_steps = cfg.max_train_steps or per_epoch * cfg.epochs
        self.scheduler = create_scheduler(cfg, self.optimizer, self.total_steps)
        self.tokens_seen = 0  # real (non-padding) tokens trained on, for throughput figures
        self.writer: Any = None
        self._last_loss = 0.0
        self._eval_metrics: dict[str, float] = {}

    # --- state ------------------------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(self.model).items()}

    def checkpoint_payload(self, progress: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict]:
        return self.adapter_state(), {}, {}

    def restore(self, weights: dict[str, torch.Tensor], extra: dict[str, Any], checkpoint: Path) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, weights)

    def after_checkpoint(self) -> None:
        """Nothing besides the checkpoint: the adapter folder is written at the end."""

    def wait_for_everyone(self) -> None:
        """One process."""

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

    def epoch_batches(self, epoch: int) -> list[list]:
        return epoch_batches(self.train_rows, self.cfg.batch_size, self.cfg.seed, epoch)

    def optimizer_step(self, window: list[list], step: int) -> None:
        """One optimizer step over `window` micro-batches; its mean loss (per token, or per pair) is kept."""
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
        self._last_loss = total / max(1, tokens)

    def after_optimizer_step(self, step: int) -> None:
        """No per-step bookkeeping besides the loop's."""

    def step_loss(self, step: int) -> float:
        return self._last_loss

    def step_report(self, step: int, loss: float) -> dict[str, Any]:
        if self.writer:
            self.writer.add_scalar("loss/train", loss, step)
        return {"lr": self.scheduler.get_last_lr()[0], "tokens_seen": self.tokens_seen, **self.metrics}

    def evaluate(self, step: int) -> float:
        """The loop's evaluation: eval loss, with its preference metrics kept for the `eval` event."""
        self._eval_metrics = {}
        return self.eval_loss(self._eval_metrics)

    @torch.no_grad()
    def eval_loss(self, metrics: dict[str, float] | None = None) -> float | None:
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

    # --- the loop's evaluation and save hooks -------------------------------------------------------------------
    def evaluation_due(self, step: int, end_of_epoch: bool, at_end: bool) -> bool:
        every = self.cfg.eval_every_n_steps
        return bool(self.eval_rows) and ((every and step % every == 0) or (not every and end_of_epoch))

    def report_evaluation(self, step: int, value: float, best: tuple[float, int] | None) -> None:
        self.events.emit("eval", step=step, eval_loss=value, **self._eval_metrics)
        if self.writer:
            self.writer.add_scalar("loss/eval", value, step)

    def keep_best(self, value: float, step: int) -> None:
        if self.cfg.early_stopping_patience:
            self.model.save_pretrained(str(self.out / "best"))
            ordinary_permissions(self.out / "best")

    def between_steps(self, step: int, at_end: bool) -> None:
        """No extras between steps (samples are the image task's)."""

    def save_due(self, step: int, end_of_epoch: bool, epoch: int) -> bool:
        return bool(self.cfg.save_steps and step % self.cfg.save_steps == 0)


def _write_outputs(run: TextTask, loop: RunLoop) -> LLMResult:
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
    eval_loss = loop.tracker.best[0] if loop.tracker.best else run.eval_loss()
    serving = _serving_check(run, final)
    return LLMResult(final, loop.progress.step, loop.last_loss, eval_loss, merged, serving)


def _serving_check(run: TextTask, adapter: Path) -> dict[str, Any] | None:
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
    with run_session(out, callbacks, stop) as (events, stop):
        task = TextTask(cfg, events)
        loop = RunLoop(task, cfg, events, stop)
        loop.maybe_resume()
        if cfg.logging:
            from torch.utils.tensorboard import SummaryWriter

            task.writer = SummaryWriter(str(out / "logs"))
        events.emit(
            "started",
            total_steps=task.total_steps,
            start_step=loop.progress.step,
            rows=len(task.train_rows),
            eval_rows=len(task.eval_rows),
            objective=cfg.objective,
            reference_s=round(task.reference_s, 3),
        )
        task.model.train()
        loop.run()
        result = _write_outputs(task, loop)
        events.emit(
            "finished",
            adapter=str(result.adapter_dir),
            steps=result.steps,
            loss=result.train_loss,
            eval_loss=result.eval_loss,
        )
        return result
