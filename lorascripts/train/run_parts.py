"""The parts of a training run and their setup: accelerator, model, network, optimizer, inputs, outputs.

`RunParts` owns every object the loop uses and the side jobs around it (samples, TensorBoard, LoRA files),
so that trainer.py contains only the loop itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import TrainConfig, save_config
from ..errors import ModelError
from ..run.events import EventSink
from ..run.precision import Precision, resolve_precision
from ..run.result import TrainResult

if TYPE_CHECKING:
    from ..perf.estimate import RunEstimate
from ..run.state import Progress
from .placement import EncoderPlacement, released_parts, text_encoder_names
from .setup import (
    attach_log_file,
    check_model_limits,
    output_name_for,
    prepare_output_dir,
    resolution_for,
    resolve_base_model,
    scan,
    use_channels_last,
)
from .step import StepNoise

logger = logging.getLogger(__name__)


class RunParts:
    """Objects of one run, created in two phases (`build_parts`, then `setup_rest` once events exist)."""

    def __init__(self, cfg: TrainConfig, total_steps_for: Callable[[TrainConfig, int], int]) -> None:
        from accelerate import Accelerator

        self.cfg = cfg
        self._total_steps_for = total_steps_for
        cpu = not torch.cuda.is_available()
        device = torch.device("cpu") if cpu else torch.device("cuda")
        self.estimate = _estimate(cfg, device.type)
        overhead_bound = bool(self.estimate and self.estimate.overhead_bound)
        self.precision: Precision = resolve_precision(cfg, device, overhead_bound)
        self._threads = _set_threads(cfg, device.type, overhead_bound)
        if self._threads is not None and self.estimate is not None:
            # the matmul peak depends on the thread count; the step cost is cached, so this is cheap
            self.estimate = (
                _estimate(cfg, device.type, overhead_bound, self.estimate.base_rss_bytes) or self.estimate
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
        from .inputs import FixedSize, InputPipeline, TextCache
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
        self.is_sdxl = self.base.family.value == "sdxl"
        self.vae_scale = 2 ** (len(self.base.vae.config.block_out_channels) - 1)
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
        self.inputs = InputPipeline(cfg, train_items, buckets, self.vae_identity(), cache_dir)
        events.emit("caching", images=len(train_items), mode=cfg.cache_latents)
        self.inputs.prepare(self.base.vae, show_progress=acc.is_local_main_process)
        self._prepare_validation(held_out, cache_dir)
        text_disk = cache_dir / "text" if cfg.cache_text_encoder_outputs == "disk" else None
        self._text_cache = TextCache(text_disk, self.vae_identity(), cfg.clip_skip)
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
                self.text_inputs(captions[start : start + 16])
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
        # buckets must be multiples of the VAE factor x U-Net downsampling; small models allow finer steps
        unit = self.vae_scale * 2 ** (len(self.base.unet.config.block_out_channels) - 1)
        step = self.cfg.bucket_reso_steps
        return max(unit, step - step % unit) if step >= unit else unit

    def _preflight(self) -> None:
        if self.cfg.dataset_checks == "off":
            return
        from ..data.checks import preflight

        preflight(self.cfg, self.scan)

    def _freeze_and_place(self) -> None:
        base, acc, dtype = self.base, self.accelerator, self.precision.weight_dtype
        for module in (base.unet, base.vae, *base.text_encoders):
            module.requires_grad_(False)
            module.eval()
            module.to(acc.device)  # already in `dtype`: loaded so (see load_base_model)
            if module.dtype != dtype:
                module.to(dtype=dtype)
        if self.cfg.gradient_checkpointing:
            base.unet.enable_gradient_checkpointing()
            if self.cfg.train_text_encoder:
                for te in base.text_encoders:
                    te.gradient_checkpointing_enable()
        if use_channels_last(self.cfg.channels_last, acc.device.type, dtype):
            for module in (base.unet, base.vae):
                module.to(memory_format=torch.channels_last)
        if self.cfg.torch_compile:
            base.unet = torch.compile(base.unet)

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
        self.module = DiffusionLoRAModule(
            self.base, self.network, clip_skip=cfg.clip_skip, min_snr_gamma=cfg.min_snr_gamma
        )

    def _read_initial_lora(self) -> tuple[dict[str, torch.Tensor] | None, dict[str, str]]:
        if not self.cfg.initial_lora:
            return None, {}
        from ..network.save import read_lora_weights

        tensors, metadata = read_lora_weights(Path(self.cfg.initial_lora))
        version = metadata.get("ss_base_model_version", "")
        family = self.base.family.value
        if version and not _version_matches(version, family):
            raise ModelError(
                f"initial_lora {self.cfg.initial_lora} was trained on {version}, but the base model is {family}. "
                "Use a LoRA made for this base model."
            )
        logger.info("incremental training from %s (%d tensors)", self.cfg.initial_lora, len(tensors))
        return tensors, metadata

    def _build_optimizer(self) -> None:
        from ..run.optim import create_optimizer, create_scheduler

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
        return StepNoise.draw(
            shape, self.base.noise_scheduler.config.num_train_timesteps, seed, self.cfg.noise_offset
        )

    def conditioning(self, prepared: list, captions: list[str], shape: tuple[int, ...]) -> dict[str, Any]:
        """Keyword inputs of the training module besides latents/noise/timesteps: text, and SDXL's size ids."""
        kwargs = self.text_inputs(captions)
        if self.is_sdxl:
            h, w = shape[-2] * self.vae_scale, shape[-1] * self.vae_scale
            kwargs["time_ids"] = torch.tensor(
                [[*x.original_size, *x.crop_top_left, h, w] for x in prepared], dtype=torch.float32
            ).to(self.accelerator.device)
        return kwargs

    def text_inputs(self, captions: list[str]) -> dict[str, Any]:
        """Token ids for the text encoders, or cached encoder outputs when the encoders are frozen and cached."""
        from ..models.text import encode_tokens, tokenize

        device = self.accelerator.device
        if self.cfg.cache_text_encoder_outputs == "off":
            return {"input_ids": [ids.to(device) for ids in tokenize(self.base, captions)]}
        missing = [c for c in dict.fromkeys(captions) if self._text_cache.get(c) is None]
        if missing:
            names = text_encoder_names(len(self.base.text_encoders))
            with torch.no_grad(), self.placement.borrowed(*names):
                hidden, pooled = encode_tokens(
                    self.base,
                    [i.to(device) for i in tokenize(self.base, missing)],
                    clip_skip=self.cfg.clip_skip,
                )
            for i, caption in enumerate(missing):
                self._text_cache.put(caption, hidden[i], pooled[i] if pooled is not None else None)
        found = [self._text_cache.get(c) for c in captions]
        hidden = torch.stack([h for h, _ in found]).to(device)
        pooled = None if found[0][1] is None else torch.stack([p for _, p in found]).to(device)
        return {"cached": (hidden, pooled)}

    def log_scalars(self, step: int, loss: float, lrs: list[float]) -> None:
        if self.writer is not None:
            self.writer.add_scalar("loss", loss, step)
            for i, lr in enumerate(lrs):
                self.writer.add_scalar(f"lr/group{i}", lr, step)

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.base.family.value,
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


def _version_matches(version: str, family: str) -> bool:
    if family == "sdxl":
        return version.startswith("sdxl")
    return version.startswith("sd_v1" if family == "sd1" else "sd_v2")


def _estimate(
    cfg: TrainConfig, device_type: str, overhead_bound: bool | None = None, base_rss: int | None = None
) -> RunEstimate | None:
    """The pre-flight estimate (from headers; before anything is loaded). Advice only: never fails a run."""
    from ..perf.estimate import estimate_run

    try:
        return estimate_run(cfg, device=device_type, overhead_bound=overhead_bound, base_rss_bytes=base_rss)
    except Exception as exc:  # noqa: BLE001 - the model load reports real problems with the checkpoint
        logger.info("no pre-flight estimate for %s (%s)", cfg.base_model, exc)
        return None


def _auto_threads(device_type: str, overhead_bound: bool) -> int:
    """0 (torch's default), or 1 where more threads only wait on each other.

    Two cases, both measured: a tiny model's operators take microseconds, and splitting each over OpenMP
    threads costs more in barriers than it gains; and on a machine already busier than its cores (load
    average >= 2x cores) every parallel region waits for a descheduled thread: there, SD1.5 at 256 px took
    33-36 s/step on 2 threads and 5-21 s on one, the 64 px pipeline 1.6-6 s against 0.22-0.48 s.
    """
    if device_type != "cpu":
        return 0
    cores = os.cpu_count() or 1
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= 2 * cores
    return 1 if overhead_bound or busy else 0


def _set_threads(cfg: TrainConfig, device_type: str, overhead_bound: bool) -> int | None:
    """Apply cpu_threads (0: _auto_threads); returns the count to restore at the end, if it was changed."""
    wanted = cfg.cpu_threads or _auto_threads(device_type, overhead_bound)
    if not wanted or wanted == torch.get_num_threads():
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(wanted)
    logger.info("torch CPU threads: %d (was %d)", wanted, before)
    return before


def build_parts(cfg: TrainConfig, total_steps_for: Callable[[TrainConfig, int], int]) -> RunParts:
    """Phase 1: accelerator and output folder (so that later failures can be reported as events)."""
    return RunParts(cfg, total_steps_for)
