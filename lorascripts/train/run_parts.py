"""The parts of a training run and their setup: accelerator, model, network, optimizer, inputs, outputs.

`RunParts` owns every object the loop uses and the side jobs around it (samples, TensorBoard, LoRA files),
so that trainer.py contains only the loop itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import TrainConfig, save_config
from ..errors import ModelError
from .events import EventSink
from .placement import EncoderPlacement, released_parts, text_encoder_names
from .resources import run_estimate, set_threads
from .setup import (
    Precision,
    attach_log_file,
    check_model_limits,
    output_name_for,
    prepare_output_dir,
    resolution_for,
    resolve_base_model,
    resolve_precision,
    scan,
    use_channels_last,
)
from .state import Progress

if TYPE_CHECKING:
    from ..models.families import StepNoise

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced."""

    lora_path: Path
    output_dir: Path
    steps: int
    final_loss: float | None
    compat_ok: bool | None = None
    files: list[Path] = field(default_factory=list)


class RunParts:
    """Objects of one run, created in two phases (`build_parts`, then `setup_rest` once events exist)."""

    def __init__(self, cfg: TrainConfig, total_steps_for: Callable[[TrainConfig, int], int]) -> None:
        from accelerate import Accelerator

        self.cfg = cfg
        self._total_steps_for = total_steps_for
        cpu = not torch.cuda.is_available()
        device = torch.device("cpu") if cpu else torch.device("cuda")
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

    # --- phase 2 ---------------------------------------------------------------------------------------------------
    def setup_rest(self, events: EventSink) -> None:
        """Dataset, base model, caches, network, optimizer: everything that can fail on user input."""
        from ..data.buckets import BucketSet
        from ..models import load_base_model
        from .conditioning import Conditioner
        from .inputs import FixedSize, InputPipeline
        from .validation import validation_items

        cfg, acc = self.cfg, self.accelerator
        self.scan = scan(cfg)
        self._preflight()
        train_items, held_out = validation_items(cfg, list(self.scan.items))
        if self.estimate is not None:
            logger.info("%s", self.estimate.describe())
            events.emit("estimate", **self.estimate.event())
        events.emit("loading_model", base_model=cfg.base_model)
        self.base = load_base_model(
            resolve_base_model(cfg.base_model),
            prediction_type=cfg.prediction_type,
            allow_pickle=cfg.allow_pickle,
            tokenizer_path=cfg.tokenizer_path,
            expected_family=None if cfg.model_family == "auto" else cfg.model_family,
            dtype=self.precision.weight_dtype,
        )
        check_model_limits(cfg, self.base)
        self.objective = self.base.family.objective(self.base, min_snr_gamma=cfg.min_snr_gamma)
        self._freeze_and_place()
        width, height = resolution_for(cfg, self.base.resolution)
        self.resolution = (width, height)
        buckets = BucketSet(
            (width, height),
            min_reso=min(cfg.min_bucket_reso, width, height),
            max_reso=max(cfg.max_bucket_reso, width, height),
            step=self._bucket_step(),
            no_upscale=cfg.bucket_no_upscale,
        )
        if not cfg.enable_bucket:
            buckets = FixedSize(buckets, (width, height))
        self.buckets = buckets
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.output_dir / "cache"
        self.scale_shift = self.base.family.latent_scale_shift(self.base.vae)
        self.inputs = InputPipeline(
            cfg, train_items, buckets, self.vae_identity(), cache_dir, self.scale_shift
        )
        events.emit("caching", images=len(train_items), mode=cfg.cache_latents)
        self.inputs.prepare(self.base.vae, show_progress=acc.is_local_main_process)
        self._prepare_validation(held_out, cache_dir)
        self.conditioning = Conditioner(
            cfg, self.base, self.placement, acc.device, self.vae_identity(), cache_dir
        )
        self._build_network()
        self._build_optimizer()
        self._build_ema()
        # last: accelerate's prepare() moves the whole training module (text encoders included) to the device
        self._release_cached_encoders()
        self._start_logging()

    def _release_cached_encoders(self) -> None:
        """Frozen modules whose outputs are all cached leave the GPU (placement.py)."""
        cfg, base, acc = self.cfg, self.base, self.accelerator
        parts = released_parts(
            cfg,
            device_type=acc.device.type,
            processes=acc.num_processes,
            text_cached=cfg.cache_text_encoder_outputs != "off" and not cfg.train_text_encoder,
        )
        if "vae" in parts:
            self.placement.release("VAE", base.vae)
        if "text" in parts:
            rng = random.Random(cfg.seed)  # fixed captions: the draw changes nothing
            captions = [self.inputs.caption(e, rng) for e in self.inputs.entries()]
            captions = list(dict.fromkeys(captions + (self.validator.captions if self.validator else [])))
            for start in range(0, len(captions), 16):
                self.conditioning.text(captions[start : start + 16])
            for name, encoder in zip(text_encoder_names(len(base.text_encoders)), base.text_encoders):
                self.placement.release(name, encoder)

    def _prepare_validation(self, held_out: list, cache_dir: Path) -> None:
        """The validation images' fixed latents and captions (validation.py), or None without validation."""
        from .validation import Validator, expected_share

        self.validator = Validator(self, held_out, cache_dir) if held_out else None
        if self.validator is not None:
            cfg = self.cfg
            share = expected_share(
                len(held_out), cfg.validation_timesteps, cfg.batch_size, cfg.validate_every_n_steps
            )
            level = logging.WARNING if share > 0.1 else logging.INFO
            logger.log(
                level,
                "validation loss on %d held-out image(s) x %d timesteps every %d steps: about %.0f%% of training "
                "time%s",
                len(held_out),
                cfg.validation_timesteps,
                cfg.validate_every_n_steps,
                100 * share,
                "; raise validate_every_n_steps or hold out fewer images to make it cheaper"
                if share > 0.1
                else "",
            )
            self.validator.prepare(self.base.vae, show_progress=self.accelerator.is_local_main_process)

    def _build_ema(self) -> None:
        from .ema import LoraEMA

        cfg = self.cfg
        self.ema = None
        if cfg.ema_decay is not None:
            device = torch.device("cpu") if cfg.ema_device == "cpu" else self.accelerator.device
            self.ema = LoraEMA(
                self.trainable, cfg.ema_decay, cfg.ema_start_step, cfg.ema_update_every, device
            )

    def _bucket_step(self) -> int:
        unit = self.base.family.bucket_unit(self.base)  # VAE factor x the denoiser's own unit
        step = self.cfg.bucket_reso_steps
        return max(unit, step - step % unit) if step >= unit else unit

    def _preflight(self) -> None:
        if self.cfg.dataset_checks == "off":
            return
        from ..data.checks import preflight

        preflight(self.cfg, self.scan)

    def _freeze_and_place(self) -> None:
        base, acc, dtype = self.base, self.accelerator, self.precision.weight_dtype
        for module in (base.denoiser, base.vae, *base.text_encoders):
            module.requires_grad_(False)
            module.eval()
            module.to(acc.device)  # already in `dtype`: loaded so (see load_base_model)
            if module.dtype != dtype:
                module.to(dtype=dtype)
        if self.cfg.gradient_checkpointing:
            base.family.enable_gradient_checkpointing(base, self.cfg.train_text_encoder)
        if use_channels_last(self.cfg.channels_last, acc.device.type, dtype):
            for module in (base.denoiser, base.vae):
                module.to(memory_format=torch.channels_last)
        if self.cfg.torch_compile:
            base.denoiser = torch.compile(base.denoiser)

    def vae_identity(self) -> str:
        source = Path(self.base.source)
        stat = source.stat() if source.exists() else None
        return f"{source.resolve() if stat else self.base.source}|{stat.st_size if stat else ''}|{stat.st_mtime if stat else ''}"

    def _build_network(self) -> None:
        from ..network.lora import LoraNetwork, NetworkSpec
        from .step import DiffusionLoRAModule

        cfg = self.cfg
        spec = NetworkSpec(
            network_type=cfg.network_type,
            rank=cfg.lora_rank,
            alpha=cfg.lora_alpha,
            conv_rank=cfg.conv_rank,
            conv_alpha=cfg.conv_alpha,
            dropout=cfg.dropout,
            rank_dropout=cfg.rank_dropout,
            module_dropout=cfg.module_dropout,
            target_modules=list(cfg.target_modules),
            train_text_encoder=cfg.train_text_encoder,
        )
        initial, self.initial_metadata = self._read_initial_lora()
        # the LoRA-down init draws from the global RNG: seed it so a run is reproducible whatever ran before
        torch.manual_seed(cfg.seed)
        self.network = LoraNetwork.create(self.base, spec, initial=initial)
        self.network.to(self.accelerator.device)
        self.network.apply()
        self.spec = spec
        shapes = sorted((k, tuple(v.shape)) for k, v in self.network.kohya_state_dict().items())
        self.network_fingerprint = hashlib.sha256(
            json.dumps([cfg.network_type, shapes]).encode()
        ).hexdigest()[:16]
        self.module = DiffusionLoRAModule(self.base, self.network, self.objective, clip_skip=cfg.clip_skip)

    def _read_initial_lora(self) -> tuple[dict[str, torch.Tensor] | None, dict[str, str]]:
        if not self.cfg.initial_lora:
            return None, {}
        from ..network.save import read_lora_weights

        tensors, metadata = read_lora_weights(Path(self.cfg.initial_lora))
        version = metadata.get("ss_base_model_version", "")
        family = self.base.family
        if version and not family.made_for(version):
            raise ModelError(
                f"initial_lora {self.cfg.initial_lora} was trained on {version}, but the base model is {family.name}. "
                "Use a LoRA made for this base model."
            )
        logger.info("incremental training from %s (%d tensors)", self.cfg.initial_lora, len(tensors))
        return tensors, metadata

    def _build_optimizer(self) -> None:
        from .optim import create_optimizer, create_scheduler

        cfg, acc = self.cfg, self.accelerator
        groups = self.network.param_groups(cfg.effective_unet_lr, cfg.effective_text_encoder_lr)
        self.trainable = [p for g in groups for p in g["params"]]
        optimizer = create_optimizer(cfg, groups, acc.device)
        self.module, self.optimizer = acc.prepare(self.module, optimizer)
        from .batches import epoch_batches

        n_batches = len(
            epoch_batches(self.inputs.entries(), cfg.batch_size, cfg.seed, 0, world_size=acc.num_processes)
        )
        self.batches_per_epoch = max(1, n_batches)
        self.total_steps = self._total_steps_for(cfg, self.batches_per_epoch)
        # the schedule steps once per optimizer step; it is deliberately not wrapped by accelerate, which would
        # step it once per process
        self.scheduler = create_scheduler(cfg, self.optimizer.optimizer, self.total_steps)

    def _start_logging(self) -> None:
        from tqdm.auto import tqdm

        acc = self.accelerator
        self.progress_bar = tqdm(
            total=self.total_steps,
            desc="training",
            unit="step",
            disable=not acc.is_local_main_process,
            dynamic_ncols=True,
        )
        if self.cfg.logging and acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output_dir / "logs"))

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
        from .outputs import render_samples

        if self.accelerator.is_main_process:
            paths = render_samples(self, step)
            events.emit("sample", step=step, paths=[str(p) for p in paths])
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
