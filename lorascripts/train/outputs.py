"""What a run writes: LoRA files with kohya metadata, the WebUI sidecar, the resolved config, samples, and the
compatibility self-test of the final file."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import TrainingError
from ..run.events import EventSink
from ..run.state import Progress

if TYPE_CHECKING:
    from ..run.result import TrainResult
    from .run_parts import RunParts

logger = logging.getLogger(__name__)

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _training_hyperparameters(parts: RunParts) -> dict[str, str]:
    from ..run.optim import optimizer_label
    from .batches import steps_per_epoch

    cfg = parts.cfg
    text_trained = any(c != "unet" for c in parts.network.components.values())
    per_epoch = steps_per_epoch(parts.batches_per_epoch, cfg.gradient_accumulation_steps)
    return {
        "ss_learning_rate": str(cfg.learning_rate),
        "ss_unet_lr": str(cfg.effective_unet_lr),
        # kohya writes None when no text-encoder module was trained
        "ss_text_encoder_lr": str(cfg.effective_text_encoder_lr) if text_trained else "None",
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_lr_warmup_steps": str(cfg.lr_warmup_steps),
        "ss_optimizer": optimizer_label(parts.optimizer, cfg),
        "ss_batch_size_per_device": str(cfg.batch_size),
        "ss_total_batch_size": str(
            cfg.batch_size * parts.accelerator.num_processes * cfg.gradient_accumulation_steps
        ),
        "ss_gradient_accumulation_steps": str(cfg.gradient_accumulation_steps),
        "ss_gradient_checkpointing": str(cfg.gradient_checkpointing),
        "ss_mixed_precision": parts.precision.mode,
        "ss_max_train_steps": str(parts.total_steps),
        "ss_noise_offset": str(cfg.noise_offset),
        "ss_min_snr_gamma": str(cfg.min_snr_gamma),
        "ss_shuffle_caption": str(cfg.shuffle_caption),
        "ss_keep_tokens": str(cfg.keep_tokens),
        "ss_caption_dropout_rate": str(cfg.caption_dropout_rate),
        "ss_caption_tag_dropout_rate": str(cfg.caption_tag_dropout_rate),
        **_bucket_fields(parts),
        "ss_cache_latents": str(cfg.cache_latents != "off"),
        "ss_flip_aug": str(cfg.flip_aug),
        "ss_max_grad_norm": str(cfg.max_grad_norm),
        "ss_num_train_images": str(len(parts.inputs.items)),
        "ss_num_batches_per_epoch": str(parts.batches_per_epoch),
        # as kohya: the epochs the run spans, ceil(steps / steps per epoch), whether epochs or max_train_steps
        # bounded it
        "ss_num_epochs": str(-(-parts.total_steps // per_epoch)),
        **base_model_hashes(Path(parts.base.source)),
    }


def _bucket_fields(parts: RunParts) -> dict[str, str]:
    """kohya's bucket settings: the bucket sides in use with bucketing on; None (no upscale False) with it off."""
    cfg, buckets = parts.cfg, parts.buckets
    on = cfg.enable_bucket
    return {
        "ss_enable_bucket": str(on),
        "ss_bucket_no_upscale": str(on and cfg.bucket_no_upscale),
        "ss_min_bucket_reso": str(buckets.min_reso) if on else "None",
        "ss_max_bucket_reso": str(buckets.max_reso) if on else "None",
    }


def base_model_hashes(source: Path) -> dict[str, str]:
    """kohya's `ss_sd_model_hash` (A1111's old 8-digit hash) and `ss_new_sd_model_hash` (SHA-256 of the whole
    file) when the base model is a single file; nothing for a diffusers folder or a repo id. Hashed once a run."""
    if not source.is_file():
        return {}
    stat = source.stat()
    return dict(_file_hashes(str(source.resolve()), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _file_hashes(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    # size and mtime are part of the cache key: a file replaced between runs is hashed again
    from ..fileio import file_sha256, legacy_model_hash

    logger.info("hashing the base model %s (%.1f GB) for the metadata", path, size / 1e9)
    return (
        ("ss_sd_model_hash", legacy_model_hash(Path(path))),
        ("ss_new_sd_model_hash", file_sha256(Path(path))),
    )


def bucket_info(parts: RunParts) -> dict | None:
    """kohya's ss_bucket_info structure from the run's bucket assignment; None (kohya: "null") without buckets."""
    if not parts.cfg.enable_bucket:
        return None
    counts = parts.inputs.bucket_counts()
    buckets = {
        str(i): {"resolution": list(size), "count": n} for i, (size, n) in enumerate(sorted(counts.items()))
    }
    errors = []
    for (w, h), (bw, bh) in zip(parts.inputs.sizes, parts.inputs.item_buckets):
        errors.append(abs(w / h - bw / bh))
    return {"buckets": buckets, "mean_img_ar_error": sum(errors) / max(1, len(errors))}


def build_metadata(
    parts: RunParts,
    progress: Progress,
    name: str,
    *,
    final: bool,
    loss: float | None,
    best: float | None = None,
) -> dict[str, str]:
    """All metadata strings of a LoRA file (kohya ss_*, modelspec, and our ls_* keys)."""
    from ..config import dump_config
    from ..network.metadata import LoraMetadataInput, build_kohya_metadata, merge_training_counters

    cfg, base, spec = parts.cfg, parts.base, parts.spec
    steps, epochs = merge_training_counters(parts.initial_metadata, progress.step, progress.epochs_reached)
    data = LoraMetadataInput(
        family=base.family,
        v_prediction=base.prediction_type == "v_prediction",
        output_name=name,
        network_module="networks.lora" if spec.network_type in ("lora", "locon") else "lycoris.kohya",
        rank=spec.rank,
        alpha=spec.alpha,
        network_args=spec.network_args(),
        training=_training_hyperparameters(parts),
        steps=steps,
        epoch=epochs,
        tag_frequency=getattr(parts.scan, "tag_frequency", {}),
        dataset_dirs=getattr(parts.scan, "dataset_dirs", {}),
        bucket_info=bucket_info(parts),
        base_model_name=Path(base.source).name if Path(base.source).exists() else str(base.source),
        resolution=parts.resolution,
        seed=cfg.seed,
        clip_skip=cfg.clip_skip,
        trigger_words=[cfg.trigger_word] if cfg.trigger_word else [],
        started_at=parts.started_at,
        finished_at=time.time() if final else None,
        session_id=random.Random(parts.started_at).randint(0, 2**31),
        config_yaml=dump_config(cfg),
        title=cfg.metadata_title or name,
        author=cfg.metadata_author,
        description=cfg.metadata_description,
        extra=_extra_metadata(parts, loss, best),
    )
    return build_kohya_metadata(data)


def _extra_metadata(parts: RunParts, loss: float | None, best: float | None) -> dict[str, str]:
    from ..network.base_weights import base_weights_metadata

    extra = {"ls_final_loss": f"{loss:.6f}" if loss is not None else "None"}
    extra.update(parts.base.family.model_metadata(parts.base))
    extra.update(parts.family_defaults.metadata())
    extra.update(base_weights_metadata(parts.base_weights))
    if best is not None:
        extra["ls_validation_loss"] = f"{best:.6f}"
    if parts.ema is not None:
        extra["ls_ema_decay"] = str(parts.cfg.ema_decay)
    return extra


def file_tensors(parts: RunParts) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The network's tensors as the file holds them in the run's `output_format`, and the metadata that says so:
    kohya's modules (the family's layout), or diffusers' PEFT keys with the scale folded into lora_B."""
    family = parts.base.family
    tensors = family.lora_file_tensors(parts.base, parts.network.kohya_state_dict())
    if parts.cfg.output_format != "diffusers":
        return tensors, {}
    from ..toolbox.convert import FOLDED_KEY, kohya_to_peft

    tensors, skipped = kohya_to_peft(family.name, tensors)
    if skipped:  # output_format is checked against the family and network type before training
        raise TrainingError(f"{len(skipped)} modules have no diffusers name, e.g. {skipped[0]}")
    return tensors, {FOLDED_KEY: "diffusers"}


def write_lora_file(
    parts: RunParts,
    progress: Progress,
    *,
    final: bool,
    loss: float | None,
    best: float | None = None,
    suffix: str = "",
) -> Path:
    """Save the network as a kohya .safetensors (atomic) and return its path: <name>, <name>-stepN or
    <name>-best (`best`: its validation loss), with `suffix` (-ema) at the end."""
    from ..network.save import save_lora_file

    name = parts.output_name if final else f"{parts.output_name}-step{progress.step:08d}"
    name = (f"{parts.output_name}-best" if best is not None else name) + suffix
    path = parts.output_dir / f"{name}.safetensors"
    tensors, fields = file_tensors(parts)
    metadata = {**build_metadata(parts, progress, name, final=final, loss=loss, best=best), **fields}
    save_lora_file(path, tensors, metadata, dtype=SAVE_DTYPES[parts.cfg.save_precision])
    logger.info("saved %s", path)
    return path


def sample_settings(parts: RunParts) -> tuple[int, float]:
    """(steps, guidance) of the run's samples: the config's, or the loaded model's own where it leaves them unset
    (its family's defaults for its variant: Z-Image Turbo 8 steps without CFG, Base 28 with CFG 4)."""
    base, cfg = parts.base, parts.cfg
    own = base.family.sample_defaults(base.family.model_variant(base))
    steps = cfg.sample_steps if cfg.sample_steps is not None else int(own["steps"])
    guidance = cfg.sample_guidance_scale if cfg.sample_guidance_scale is not None else own["guidance_scale"]
    return steps, float(guidance)


def render_samples(parts: RunParts, step: int) -> list[Path]:
    """Render the configured sample prompts with the LoRA as it is now; to files and TensorBoard."""
    import numpy as np

    from .sampling import build_pipeline, render, save_samples

    cfg = parts.cfg
    steps, guidance = sample_settings(parts)
    pipeline = build_pipeline(parts.base)
    pipeline.set_progress_bar_config(disable=True)
    parts.network.eval()
    use_ema = parts.ema is not None and cfg.ema_samples
    try:
        with parts.placement.borrowed(), parts.ema.applied() if use_ema else contextlib.nullcontext():
            images = render(
                pipeline,
                list(cfg.sample_prompts),
                seed=cfg.sample_seed,
                width=parts.resolution[0],
                height=parts.resolution[1],
                steps=steps,
                guidance_scale=guidance,
                clip_skip=cfg.clip_skip,
                autocast_dtype=parts.precision.autocast_dtype,
            )
    finally:
        parts.network.train()
    paths = save_samples(images, parts.output_dir / "samples", step)
    if parts.writer is not None:
        for i, image in enumerate(images):
            parts.writer.add_image(f"samples/{i}", np.asarray(image), step, dataformats="HWC")
    return paths


def emit_samples(parts: RunParts, step: int, events: EventSink) -> None:
    """Render the samples and emit the `sample` event with the settings they were drawn with."""
    paths = render_samples(parts, step)
    steps, guidance = sample_settings(parts)
    events.emit("sample", step=step, paths=[str(p) for p in paths], steps=steps, guidance_scale=guidance)


def finish_run(
    parts: RunParts,
    progress: Progress,
    loss: float | None,
    events: EventSink,
    best: tuple[float, int] | None = None,
) -> TrainResult:
    """Final LoRA, WebUI sidecar, resolved config, samples, and the WebUI compatibility self-test; `best` is the
    lowest validation loss and its step, named in the `finished` event with the best LoRA file."""
    from ..network.base_weights import base_weights_note
    from ..network.save import write_webui_sidecar
    from ..run.result import TrainResult

    acc, cfg = parts.accelerator, parts.cfg
    path = parts.output_dir / f"{parts.output_name}.safetensors"
    compat_ok = None
    files: list[Path] = []
    if acc.is_main_process:
        if not parts.network.all_finite():
            raise TrainingError(
                "the trained LoRA contains NaN/inf values; it was not saved. Lower learning_rate."
            )
        path = parts.write_lora(progress, final=True, loss=loss)
        sidecar = write_webui_sidecar(
            path,
            activation_text=cfg.trigger_word,
            preferred_weight=cfg.preferred_weight,
            sd_version=parts.base.family.webui_version,
            description=cfg.metadata_description,
            notes=base_weights_note(parts.base_weights),
        )
        config_path = parts.output_dir / f"{parts.output_name}.yaml"
        parts.save_resolved_config(config_path)
        files = [path, Path(sidecar) if sidecar else path.with_suffix(".json"), config_path]
        if cfg.sample_prompts:
            emit_samples(parts, progress.step, events)
        compat_ok = self_test(parts, path, events)
        events.emit(
            "finished",
            lora=str(path),
            steps=progress.step,
            loss=loss,
            compat_ok=compat_ok,
            seconds=round(time.time() - parts.started_at, 1),
            # what torch's allocator held at most (the CUDA context is on top): hosts and the benchmark show it
            peak_vram_bytes=torch.cuda.max_memory_reserved() if acc.device.type == "cuda" else None,
            **_best_fields(parts, best),
        )
    acc.wait_for_everyone()
    return TrainResult(path, parts.output_dir, progress.step, loss, compat_ok, files)


def _best_fields(parts: RunParts, best: tuple[float, int] | None) -> dict:
    if best is None:
        return {}
    lora = parts.output_dir / f"{parts.output_name}-best.safetensors"
    return {
        "best_step": best[1],
        "best_validation_loss": best[0],
        "best_lora": str(lora) if parts.cfg.keep_best and lora.is_file() else None,
    }


def self_test(parts: RunParts, path: Path, events: EventSink) -> bool | None:
    """Check the saved file against the base model it was trained on (every key under the WebUI's rules, plus
    the file-level problems the toolbox self-test knows); logged and recorded in events.jsonl."""
    from ..toolbox.selftest import self_test_shapes

    family = parts.base.family
    report = self_test_shapes(path, family.webui_layers(parts.base), family.name, parts.base.name)
    level = logging.INFO if report.ok else logging.WARNING
    logger.log(level, "self-test: %s", report.summary())
    events.emit(
        "self_test",
        ok=report.ok,
        summary=report.webui.summary(),
        problems=report.problems,
        warnings=report.warnings,
    )
    return report.ok
