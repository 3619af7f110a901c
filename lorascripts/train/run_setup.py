"""Building the parts of a run, one job a function: freezing the base model, placing its parts one after the other
while the caches fill and releasing the cached ones (placement.py), the validation set, the network and its
initial weights, the optimizer and schedule, the EMA, logging. `RunParts.setup_rest` calls them in order; each
reads and sets attributes of the `RunParts` it is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError, ModelError
from .placement import released_parts, text_encoder_names
from .setup import use_channels_last

if TYPE_CHECKING:
    from .run_parts import RunParts

logger = logging.getLogger(__name__)


def _released(parts: RunParts) -> set[str]:
    """The frozen parts this run takes off the device once their outputs are cached (placement.py)."""
    cfg, acc = parts.cfg, parts.accelerator
    return released_parts(
        cfg,
        device_type=acc.device.type,
        processes=acc.num_processes,
        text_cached=cfg.cache_text_encoder_outputs != "off" and not cfg.train_text_encoder,
    )


def release_vae(parts: RunParts) -> None:
    """The latents are cached (training and validation): the VAE leaves the GPU when `offload_encoders` says."""
    parts.placement.note("latents cached")
    if "vae" in _released(parts):
        parts.placement.release("VAE", parts.base.vae)


def place_text_encoders(parts: RunParts) -> None:
    """The text encoders come to the device after the VAE left it (T5-XXL alone is 8.9 GiB in bf16)."""
    for name, encoder in zip(text_encoder_names(len(parts.base.text_encoders)), parts.base.text_encoders):
        place_frozen(parts, name, encoder)


def release_text_encoders(parts: RunParts) -> None:
    """With fixed, cached captions every caption is encoded now and the text encoders leave the GPU, before the
    denoiser comes to it."""
    cfg, base = parts.cfg, parts.base
    if "text" not in _released(parts):
        return
    rng = random.Random(cfg.seed)  # fixed captions: the draw changes nothing
    captions = [parts.inputs.caption(e, rng) for e in parts.inputs.entries()]
    captions = list(dict.fromkeys(captions + (parts.validator.captions if parts.validator else [])))
    for start in range(0, len(captions), 16):
        parts.conditioning.text(captions[start : start + 16])
    parts.placement.note("captions cached")
    for name, encoder in zip(text_encoder_names(len(base.text_encoders)), base.text_encoders):
        parts.placement.release(name, encoder)


def prepare_validation(parts: RunParts, held_out: list, cache_dir: Path) -> None:
    """The validation images' fixed latents and captions (validation.py), or None without validation."""
    from .validation import Validator, expected_share

    parts.validator = Validator(parts, held_out, cache_dir) if held_out else None
    if parts.validator is not None:
        cfg = parts.cfg
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
        parts.validator.prepare(parts.base.vae, show_progress=parts.accelerator.is_local_main_process)


def build_ema(parts: RunParts) -> None:
    from .ema import LoraEMA

    cfg = parts.cfg
    parts.ema = None
    if cfg.ema_decay is not None:
        device = torch.device("cpu") if cfg.ema_device == "cpu" else parts.accelerator.device
        parts.ema = LoraEMA(parts.trainable, cfg.ema_decay, cfg.ema_start_step, cfg.ema_update_every, device)


def bucket_step(parts: RunParts) -> int:
    unit = parts.base.family.bucket_unit(parts.base)  # VAE factor x the denoiser's own unit
    step = parts.cfg.bucket_reso_steps
    return max(unit, step - step % unit) if step >= unit else unit


def run_preflight(parts: RunParts) -> None:
    if parts.cfg.dataset_checks == "off":
        return
    from ..data.checks import preflight

    preflight(parts.cfg, parts.scan)


def freeze(parts: RunParts) -> None:
    """The base model frozen and in eval mode, its fp8 storage and block swap set up; nothing moved yet."""
    from ..models.fp8 import upcast_fp8
    from .memory import apply_memory_options

    base, acc, dtype = parts.base, parts.accelerator, parts.precision.weight_dtype
    for module in (base.denoiser, base.vae, *base.text_encoders):
        module.requires_grad_(False)
        module.eval()
    for module in (base.vae, *base.text_encoders):
        upcast_fp8(module, dtype)  # fp8 files of the other parts (T5) kept fp8 by an fp8_base load
    if parts.cfg.blocks_to_swap and acc.num_processes > 1:
        raise ConfigError(
            "blocks_to_swap is for one GPU (DDP keeps the whole model on each device); with several GPUs set "
            "blocks_to_swap: 0 and use fp8_base: true."
        )
    # fp8 storage and the swapped blocks before anything moves: the swapped blocks never reach the device
    parts.swapper = apply_memory_options(parts.cfg, base, acc.device, dtype)
    if parts.cfg.gradient_checkpointing:
        base.family.enable_gradient_checkpointing(base, parts.cfg.train_text_encoder)


def place_frozen(parts: RunParts, name: str, module: torch.nn.Module) -> None:
    """One frozen part to the training device, in the run's weight dtype (fp8 blocks of the denoiser stay)."""
    dtype, device = parts.precision.weight_dtype, parts.accelerator.device
    module.to(device)  # already in `dtype`: loaded so (see load_base_model)
    if module.dtype != dtype and not (module is parts.base.denoiser and parts.cfg.fp8_base):
        module.to(dtype=dtype)
    # channels-last is a layout of 4-d conv weights: the U-Net's and the VAE's (a no-op for a DiT's Linears)
    if name in ("denoiser", "VAE") and use_channels_last(parts.cfg.channels_last, device.type, dtype):
        module.to(memory_format=torch.channels_last)
    parts.placement.placed(name)


def place_denoiser(parts: RunParts) -> None:
    """The denoiser to the device (with block swap: all but the swapped blocks), after the caches are full and the
    released encoders left; then compiled if asked."""
    base = parts.base
    if parts.swapper is not None:
        parts.swapper.place(base.denoiser)
        parts.placement.placed("denoiser")
    else:
        place_frozen(parts, "denoiser", base.denoiser)
    if parts.cfg.torch_compile:
        base.denoiser = torch.compile(base.denoiser)


def build_network(parts: RunParts) -> None:
    from ..network.lora import LoraNetwork, NetworkSpec
    from .step import DiffusionLoRAModule

    cfg = parts.cfg
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
    initial, parts.initial_metadata = read_initial_lora(parts)
    # the LoRA-down init draws from the global RNG: seed it so a run is reproducible whatever ran before
    torch.manual_seed(cfg.seed)
    parts.network = LoraNetwork.create(parts.base, spec, initial=initial)
    parts.network.to(parts.accelerator.device)
    parts.network.apply()
    parts.spec = spec
    shapes = sorted((k, tuple(v.shape)) for k, v in parts.network.kohya_state_dict().items())
    parts.network_fingerprint = hashlib.sha256(json.dumps([cfg.network_type, shapes]).encode()).hexdigest()[
        :16
    ]
    released = parts.placement.released.values()
    parts.module = DiffusionLoRAModule(
        parts.base,
        parts.network,
        parts.objective,
        clip_skip=cfg.clip_skip,
        # released encoders stay out of the module, so that accelerate's prepare() leaves them on the CPU
        text_encoders=[e for e in parts.base.text_encoders if not any(e is r for r in released)],
        train_text_encoder=cfg.train_text_encoder,
    )


def read_initial_lora(parts: RunParts) -> tuple[dict[str, torch.Tensor] | None, dict[str, str]]:
    if not parts.cfg.initial_lora:
        return None, {}
    from ..toolbox.convert import read_lora_any

    tensors, metadata = read_lora_any(Path(parts.cfg.initial_lora))  # kohya or diffusers keys
    version = metadata.get("ss_base_model_version", "")
    family = parts.base.family
    if version and not family.made_for(version):
        raise ModelError(
            f"initial_lora {parts.cfg.initial_lora} was trained on {version}, but the base model is {family.name}. "
            "Use a LoRA made for this base model."
        )
    logger.info("incremental training from %s (%d tensors)", parts.cfg.initial_lora, len(tensors))
    return family.lora_network_tensors(parts.base, tensors), metadata


def build_optimizer(parts: RunParts) -> None:
    from ..run.optim import create_optimizer, create_scheduler

    cfg, acc = parts.cfg, parts.accelerator
    groups = parts.network.param_groups(cfg.effective_unet_lr, cfg.effective_text_encoder_lr)
    parts.trainable = [p for g in groups for p in g["params"]]
    optimizer = create_optimizer(cfg, groups, acc.device)
    # with block swap the model is placed already (accelerate would bring the swapped blocks to the device)
    placement = [parts.swapper is None, True]
    parts.module, parts.optimizer = acc.prepare(parts.module, optimizer, device_placement=placement)
    parts.placement.note("prepared")
    from .batches import epoch_batches

    n_batches = len(
        epoch_batches(parts.inputs.entries(), cfg.batch_size, cfg.seed, 0, world_size=acc.num_processes)
    )
    parts.batches_per_epoch = max(1, n_batches)
    parts.total_steps = parts._total_steps_for(cfg, parts.batches_per_epoch)
    # the schedule steps once per optimizer step; it is deliberately not wrapped by accelerate, which would
    # step it once per process
    parts.scheduler = create_scheduler(cfg, parts.optimizer.optimizer, parts.total_steps)


def start_logging(parts: RunParts) -> None:
    from tqdm.auto import tqdm

    acc = parts.accelerator
    parts.progress_bar = tqdm(
        total=parts.total_steps,
        desc="training",
        unit="step",
        disable=not acc.is_local_main_process,
        dynamic_ncols=True,
    )
    if parts.cfg.logging and acc.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        parts.writer = SummaryWriter(str(parts.output_dir / "logs"))
