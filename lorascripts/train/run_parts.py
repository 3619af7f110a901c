"""The parts of a training run and their setup: accelerator, model, network, optimizer, inputs, outputs.

`RunParts` owns every object the loop uses and the side jobs around it (samples, TensorBoard, LoRA files),
so that trainer.py contains only the loop itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import COMPONENT_KEYS, TrainConfig, save_config
from ..models.run_defaults import with_family_defaults
from ..perf.memory_presets import resolve_memory_preset
from ..run.events import EventSink
from ..run.precision import Precision, resolve_precision
from ..run.result import TrainResult
from ..run.state import Progress
from .placement import EncoderPlacement
from .resources import run_estimate, set_threads
from .setup import (
    attach_log_file,
    check_model_limits,
    output_name_for,
    prepare_output_dir,
    resolution_for,
    resolve_base_model,
    scan,
)

if TYPE_CHECKING:
    from ..models.families import StepNoise

logger = logging.getLogger(__name__)


class RunParts:
    """Objects of one run, created in two phases (`build_parts`, then `setup_rest` once events exist)."""

    def __init__(self, cfg: TrainConfig, total_steps_for: Callable[[TrainConfig, int], int]) -> None:
        from accelerate import Accelerator

        cpu = not torch.cuda.is_available()
        device = torch.device("cpu") if cpu else torch.device("cuda")
        # the keys the config leaves to the base model's family first, then `memory_preset` becomes its
        # settings: the estimate, the model and the optimizer all read them
        cfg, self.family_defaults = with_family_defaults(cfg)
        cfg = resolve_memory_preset(cfg, device.type)[0]
        self.cfg = cfg
        self._total_steps_for = total_steps_for
        self.estimate = run_estimate(cfg, device.type)
        overhead_bound = bool(self.estimate and self.estimate.overhead_bound)
        self.precision: Precision = resolve_precision(cfg, device, overhead_bound)
        self._threads = set_threads(cfg, device.type, overhead_bound)
        if self._threads is not None and self.estimate is not None:
            # the matmul peak depends on the thread count; the step cost is cached, so this is cheap
            self.estimate = (
                run_estimate(cfg, device.type, overhead_bound, self.estimate.base_rss_bytes) or self.estimate
            )
        self.accelerator = Accelerator(mixed_precision=self.precision.mode, cpu=cpu)
        self.placement = EncoderPlacement(self.accelerator.device)
        self.output_dir = prepare_output_dir(cfg)
        self.output_name = output_name_for(cfg)
        self._log_handler = attach_log_file(self.output_dir) if self.accelerator.is_main_process else None
        self.started_at = time.time()
        self.writer = None
        self.progress_bar = None
        self.validator = None
        self.ema = None
        self.intermediate: list[Path] = []
        self.swapper = None  # block swap (train/memory.py), set with the model
        self.base_weights: list[dict[str, Any]] = []  # records of the merged `base_weights` files

    # --- phase 2 ---------------------------------------------------------------------------------------------------
    def setup_rest(self, events: EventSink) -> None:
        """Dataset, base model, caches, network, optimizer: everything that can fail on user input."""
        from ..models.weights import keep_float8
        from ..network.base_weights import base_weight_files, merge_base_weights
        from . import run_setup as build
        from .conditioning import Conditioner
        from .validation import validation_items

        cfg, acc = self.cfg, self.accelerator
        self.scan = scan(cfg)
        build.run_preflight(self)
        train_items, held_out = validation_items(cfg, list(self.scan.items))
        logger.info("%s", self.family_defaults.describe())
        if self.estimate is not None:
            logger.info("%s", self.estimate.describe())
            events.emit("estimate", **self.estimate.event())
        base_weights = base_weight_files(cfg.base_weights, cfg.base_weights_multiplier)  # before the load
        events.emit("loading_model", base_model=cfg.base_model)
        # fp8_base: an fp8 file's matrices stay fp8 as they load (no upcast copy)
        with keep_float8() if cfg.fp8_base else contextlib.nullcontext():
            self.base = self._load_model()
        self.base.extra["config"] = cfg  # the family's own settings (FLUX: sampling, shift, guidance)
        # into the frozen weights before the run's LoRA exists; on resume the fresh base gets them again
        self.base_weights = merge_base_weights(self.base, base_weights)
        check_model_limits(cfg, self.base)
        self.objective = self.base.family.objective(self.base, min_snr_gamma=cfg.min_snr_gamma)
        build.freeze(self)  # nothing on the device yet: the caches fill first (placement.py)
        self._build_inputs(train_items)
        # one frozen part after the other: the VAE while the latents are cached, then the text encoders while the
        # captions are (each released once cached, when offload_encoders says), the denoiser last
        build.place_frozen(self, "VAE", self.base.vae)
        events.emit("caching", images=len(train_items), mode=cfg.cache_latents)
        self.inputs.prepare(self.base.vae, show_progress=acc.is_local_main_process)
        build.prepare_validation(self, held_out, self.cache_dir)
        build.release_vae(self)
        build.place_text_encoders(self)
        self.conditioning = Conditioner(
            cfg, self.base, self.placement, acc.device, self.vae_identity(), self.cache_dir
        )
        build.release_text_encoders(self)
        build.place_denoiser(self)
        build.build_network(self)
        build.build_optimizer(self)
        build.build_ema(self)
        build.start_logging(self)

    def _build_inputs(self, train_items: list) -> None:
        """Buckets and the training images' input pipeline (nothing encoded yet)."""
        from ..data.buckets import BucketSet
        from . import run_setup as build
        from .inputs import FixedSize, InputPipeline

        cfg = self.cfg
        width, height = resolution_for(cfg, self.base.resolution)
        self.resolution = (width, height)
        buckets = BucketSet(
            (width, height),
            min_reso=min(cfg.min_bucket_reso, width, height),
            max_reso=max(cfg.max_bucket_reso, width, height),
            step=build.bucket_step(self),
            no_upscale=cfg.bucket_no_upscale,
        )
        if not cfg.enable_bucket:
            buckets = FixedSize(buckets, (width, height))
        self.buckets = buckets
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.output_dir / "cache"
        self.scale_shift = self.base.family.latent_scale_shift(self.base.vae)
        self.inputs = InputPipeline(
            cfg, train_items, buckets, self.vae_identity(), self.cache_dir, self.scale_shift
        )

    def _load_model(self) -> Any:
        from ..models import load_base_model

        cfg = self.cfg
        return load_base_model(
            resolve_base_model(cfg.base_model),
            prediction_type=cfg.prediction_type,
            allow_pickle=cfg.allow_pickle,
            tokenizer_path=cfg.tokenizer_path,
            tokenizer_roots=cfg.tokenizer_roots,
            expected_family=None if cfg.model_family == "auto" else cfg.model_family,
            dtype=self.precision.weight_dtype,
            components={key: getattr(cfg, key) for key in COMPONENT_KEYS},
        )

    def vae_identity(self) -> str:
        source = Path(self.base.source)
        stat = source.stat() if source.exists() else None
        return f"{source.resolve() if stat else self.base.source}|{stat.st_size if stat else ''}|{stat.st_mtime if stat else ''}"

    # --- helpers used by the loop -------------------------------------------------------------------------------------
    def draw_noise(self, shape: tuple[int, ...], seed: int) -> StepNoise:
        return self.objective.draw(shape, seed, self.cfg.noise_offset)

    def log_scalars(self, step: int, loss: float, lrs: list[float]) -> None:
        if self.writer is not None:
            self.writer.add_scalar("loss", loss, step)
            for i, lr in enumerate(lrs):
                self.writer.add_scalar(f"lr/group{i}", lr, step)

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.base.family.name,
            "prediction_type": self.base.prediction_type,
            "images": len(self.inputs.items),
            "validation_images": len(self.validator.entries) if self.validator else 0,
            "examples": len(self.inputs.entries()),
            "total_steps": self.total_steps,
            "resolution": list(self.resolution),
            "modules": len(self.network.lora_modules),
            "output_dir": str(self.output_dir),
            "output_name": self.output_name,
            "precision": self.precision.mode,
            "processes": self.accelerator.num_processes,
        }

    def sample(self, step: int, events: EventSink) -> None:
        from .outputs import emit_samples

        if self.accelerator.is_main_process:
            emit_samples(self, step, events)
        self.accelerator.wait_for_everyone()

    def file_weights(self) -> contextlib.AbstractContextManager:
        """The weights the LoRA files hold: the EMA ones with `ema_save: ema_only`, else the trained ones."""
        if self.ema is not None and self.cfg.ema_save == "ema_only":
            return self.ema.applied()
        return contextlib.nullcontext()

    def write_lora(
        self, progress: Progress, *, final: bool, loss: float | None, best: float | None = None
    ) -> Path:
        """The LoRA file(s) of this step (`best`: <name>-best with its validation loss); EMA as ema_save says."""
        from .outputs import write_lora_file

        with self.file_weights():
            path = write_lora_file(self, progress, final=final, loss=loss, best=best)
        written = [path]
        if self.ema is not None and self.cfg.ema_save == "both":
            with self.ema.applied():
                written.append(
                    write_lora_file(self, progress, final=final, loss=loss, best=best, suffix="-ema")
                )
        if not final and best is None:
            self.intermediate += written
        return path

    def log_validation(self, step: int, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("loss/validation", value, step)

    def prune_intermediate_loras(self) -> None:
        keep = self.cfg.keep_last_n * (2 if self.ema is not None and self.cfg.ema_save == "both" else 1)
        while keep > 0 and len(self.intermediate) > keep:
            self.intermediate.pop(0).unlink(missing_ok=True)

    def finish(
        self,
        progress: Progress,
        loss: float | None,
        events: EventSink,
        best: tuple[float, int] | None = None,
    ) -> TrainResult:
        from .outputs import finish_run

        self._close_bar()  # the bar's last line before the self-test report, not repeated after it
        return finish_run(self, progress, loss, events, best)

    def _close_bar(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None

    def close(self) -> None:
        self._close_bar()
        if self.writer is not None:
            self.writer.close()
        if getattr(self, "network", None) is not None:
            self.network.remove()
        if self._threads is not None:
            torch.set_num_threads(self._threads)
        if self._log_handler is not None:
            logging.getLogger("lorascripts").removeHandler(self._log_handler)
            self._log_handler.close()

    def save_resolved_config(self, path: Path) -> None:
        save_config(self.cfg, path)


def build_parts(cfg: TrainConfig, total_steps_for: Callable[[TrainConfig, int], int]) -> RunParts:
    """Phase 1: accelerator and output folder (so that later failures can be reported as events)."""
    return RunParts(cfg, total_steps_for)
