"""Pre-flight estimate: peak memory and seconds per step of a run, before the model is loaded.

Inputs are what is known without loading weights: the architecture and sizes from the checkpoint's header
(configs.py), the step's FLOPs, saved activations and operator count from one meta-device pass (flops.py,
cached on disk per configuration), and the device's measured matmul peak (peak.py).

The memory model (bytes), with the sizes of the files the run will load (a diffusion transformer's VAE and text
encoders from the headers of the part files its loader finds, configs.py; published sizes where none is found):
  training = frozen weights in the weight dtype, whatever the files hold (the run casts the VAE and text
             encoders to it; the denoiser's block Linears 1 byte with `fp8_base`, its `blocks_to_swap` blocks in
             CPU memory but one: denoiser_memory.py), without the parts placement.py releases from the GPU
             once their outputs are cached
             + LoRA parameters, gradients and optimizer state (fp32; 8-bit states with adamw8bit)
             (+ the fp32 EMA copy of the LoRA when `ema_decay` is set and it lives on the training device)
             + activations kept for backward (+ the largest one again: its gradient lives during backward)
  encoding = before the first step, while the caches fill, the run places the frozen parts one after the other
             (train/run_setup.py): the VAE while the latents are cached, then the text encoders (with the VAE
             when it is not released) while the captions are; the denoiser and the LoRA come after the released
             parts left, so encoding = max(VAE, text encoders + kept VAE); their inference activations are not
             counted (one after the other, the VAE's activations at 1024 px never meet T5-XXL's 8.9 GiB of
             weights); the peak is max(encoding, training)
  CPU peak RSS = max(training, loading) + the process's own RSS (torch, libraries); nothing is released on a
             CPU (encoding <= training); loading holds the files' tensors and the modules built from them,
             counted at 4 bytes per parameter (calibrated: SD1.5 from an fp16 file into bf16 modules measured
             6.48 GiB at 256 and 512 px alike, this rule +1%: bench/results/2026-12-01-vm.md), so an fp8 T5
             file counts half the bytes of its fp16 twin.
  GPU peak = max(training, encoding) (torch.cuda.max_memory_allocated does not include the CUDA context).
The time model: FLOPs / (matmul peak x efficiency) + operator calls x per-call overhead; the two constants
are calibrated against measured steps (bench/) and are what makes tiny models overhead-bound.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..config.schema import COMPONENT_KEYS
from ..run.optimizers import state_bytes_per_param
from .configs import ModelShapes, model_shapes
from .denoiser_memory import DenoiserBytes, denoiser_bytes
from .flops import DEFAULT_ROLES, StepCost, train_step_cost
from .peak import matmul_peak, user_cache_dir

logger = logging.getLogger(__name__)

# Fraction of the matmul peak a U-Net step reaches, and the CPU time of one aten call (forward and backward,
# with the LoRA hooks) in seconds. CPU: calibrated on the quiet-machine bench of 2026-12-01 (2-core Xeon with
# AMX; bench/results/2026-12-01-vm.md): SD1.5 bf16 steps reached 23% (256 px) and 33% (512 px) of the
# sustained bf16 matmul peak (peak.py), the fp32 64 px pipeline ~30 us per call. CUDA: not yet measured (no GPU
# run so far), a guess.
MATMUL_EFFICIENCY = {"cpu": 0.28, "cuda": 0.6}
# torch's fused CPU attention: forward + backward ran at 0.14 TFLOP/s against a 1.3 TFLOP/s bf16 matmul peak
# (SD1.5 512 px step profile, 2026-12-01; the backward alone at 0.12); on GPUs flash attention runs like matmuls
ATTENTION_EFFICIENCY = {"cpu": 0.1, "cuda": 0.6}
OP_OVERHEAD_S = {"cpu": 30e-6, "cuda": 15e-6}
# host-to-device bytes/s of block swap's copies from pinned memory (PCIe 4.0 x16 in practice; not yet measured
# here): every swapped block comes in twice a step (forward, backward), not overlapped with compute
SWAP_BANDWIDTH = 20e9
ACTIVATION_FACTOR = 1.15  # allocator slack and the autograd bookkeeping not seen by the pack hook
LIBRARY_RSS = 350 * 2**20  # diffusers/transformers/lycoris imported after the estimate
GIB = 2**30
PRECISION_NAMES = {"no": "fp32"}


@dataclass
class RunEstimate:
    """Expected peak memory and time per step of one configuration on one device."""

    peak_memory_bytes: int
    seconds_per_step: float
    flops_per_step: float
    device: str
    suggestion: str | None = None
    memory_limit_bytes: int | None = None
    training_memory_bytes: int = 0
    loading_memory_bytes: int = 0
    encoding_memory_bytes: int = 0  # before the first step: the encoders on the device while the caches fill
    matmul_peak_flops: float = 0.0
    resolution: tuple[int, int] = (0, 0)
    precision: str = "no"  # mixed_precision the estimate assumed (auto resolved)
    overhead_bound: bool = False  # CPU step dominated by per-operator cost: fp32 and one thread are faster
    base_rss_bytes: int = 0  # the process before loading (CPU), plus the libraries imported later
    fp8_base: bool = False
    blocks_to_swap: int = 0
    swapped_bytes: int = 0  # the swapped blocks' weights, in CPU memory
    optimizer: str = "adamw"
    memory_preset: str = "off"  # the recipe the settings came from (auto resolved)
    assumed: list[str] = field(default_factory=list)  # part files not found before loading: published sizes

    def memory_settings(self) -> str:
        """The memory options the figures assume, e.g. `fp8 base, 16 blocks swapped (4.70 GiB in CPU memory)`."""
        parts = [f"memory_preset {self.memory_preset}"] if self.memory_preset != "off" else []
        if self.fp8_base:
            parts.append("fp8 base")
        if self.blocks_to_swap:
            parts.append(
                f"{self.blocks_to_swap} swap units ({self.swapped_bytes / GIB:.2f} GiB in CPU memory)"
            )
        parts.append(f"{self.optimizer} states")
        return ", ".join(parts)

    def describe(self) -> str:
        limit = f" of {self.memory_limit_bytes / GIB:.1f} GiB" if self.memory_limit_bytes else ""
        text = (
            f"estimate for {self.resolution[0]}x{self.resolution[1]} on {self.device}: peak memory "
            f"{self.peak_memory_bytes / GIB:.2f} GiB{limit}, {self.seconds_per_step:.2f} s/step "
            f"({self.flops_per_step / 1e9:.3g} GFLOP/step, measured {PRECISION_NAMES.get(self.precision, self.precision)} matmul peak "
            f"{self.matmul_peak_flops / 1e9:.3g} GFLOP/s; {self.memory_settings()})"
        )
        if self.encoding_memory_bytes > self.training_memory_bytes:
            text += (
                f"; the peak is while the caches fill ({self.training_memory_bytes / GIB:.2f} GiB once the "
                "cached parts leave the device)"
            )
        if self.assumed:
            text += (
                f"; not found before loading, so their published sizes are assumed: {', '.join(self.assumed)}"
            )
        return text + (f". Suggestion: {self.suggestion}" if self.suggestion else "")

    def short(self) -> str:
        """One line for a host's progress display."""
        text = f"estimate: {self.peak_memory_bytes / GIB:.1f} GiB peak, {self.seconds_per_step:.2f} s/step"
        if self.fp8_base or self.blocks_to_swap:
            text += f" ({self.memory_settings()})"
        return text + (f"; {self.suggestion}" if self.suggestion else "")

    def event(self) -> dict[str, Any]:
        data = asdict(self)
        data["resolution"] = list(self.resolution)
        data["summary"] = self.short()  # what the ComfyUI node and the WebUI tab show before the first step
        return data


def _cost_cached(shapes: ModelShapes, **kwargs: Any) -> StepCost:
    """train_step_cost, remembered on disk: the meta pass takes seconds, its inputs rarely change."""
    key_src = json.dumps(
        [shapes.family.name, shapes.denoiser, shapes.text_encoders, {k: str(v) for k, v in kwargs.items()}],
        sort_keys=True,
    )
    # v2: StepCost gained attention_flops (entries written before it would read as 0)
    key = hashlib.sha256(f"v2|{torch.__version__}|{key_src}".encode()).hexdigest()[:32]
    path = user_cache_dir() / "step_cost" / f"{key}.json"
    try:
        return StepCost(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    cost = train_step_cost(
        shapes.family, shapes.denoiser, text_encoder_configs=shapes.text_encoders, **kwargs
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(cost)), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass
    return cost


def resolve_mode(cfg: TrainConfig, device: str, overhead_bound: bool) -> str:
    """mixed_precision with `auto` resolved as the trainer resolves it."""
    from ..run.precision import auto_precision

    return auto_precision(device, overhead_bound) if cfg.mixed_precision == "auto" else cfg.mixed_precision


def _dtype(mode: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)


def _rss_bytes(field: str = "VmRSS") -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_limit(device: str) -> int | None:
    """Memory the run may use: the GPU's total memory, or the machine's physical memory on CPU."""
    if device == "cuda":
        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


@dataclass
class _Plan:
    """The knobs the suggestion may turn."""

    batch: int
    rank: int
    checkpointing: bool
    text_cache: bool
    fp8: bool = False
    swap: int = 0
    optimizer: str = "adamw"


def _resolution(cfg: TrainConfig, shapes: ModelShapes) -> tuple[int, int]:
    from ..train.setup import resolution_for

    return resolution_for(cfg, shapes.resolution)


def _cost(cfg: TrainConfig, shapes: ModelShapes, plan: _Plan) -> StepCost:
    """The step's cost, counted in fp32 (activation bytes scale with the element size; one cached pass)."""
    width, height = _resolution(cfg, shapes)
    return _cost_cached(
        shapes,
        batch=plan.batch,
        height=height,
        width=width,
        train_text_encoder=cfg.train_text_encoder,
        gradient_checkpointing=plan.checkpointing,
        run_text_encoder=not plan.text_cache,
        rank=plan.rank,
        roles=tuple(sorted(cfg.target_modules or DEFAULT_ROLES)),
        conv_lora=cfg.network_type != "lora",
        dtype=torch.float32,
    )


@dataclass(frozen=True)
class _Phases:
    """The bytes of one plan in each phase of a run (module docstring), and the step's cost."""

    training: int
    loading: int  # CPU only (a GPU's memory holds no file)
    encoding: int  # the VAE, then the text encoders, on the device while the caches fill (no denoiser)
    cost: StepCost

    @property
    def peak(self) -> int:
        return max(self.training, self.loading, self.encoding)


def _memory(cfg: TrainConfig, shapes: ModelShapes, plan: _Plan, device: str, mode: str) -> _Phases:
    """The memory phases of one plan."""
    cost = _cost(cfg, shapes, plan)
    item = torch.tensor([], dtype=_dtype(mode)).element_size()
    denoiser = shapes.params.get("unet", 0) * item
    if plan.fp8 or plan.swap:
        denoiser = _denoiser(shapes, plan, device, item).device
    parts = {part: n * item for part, n in shapes.params.items() if part != "unet"}  # the run casts them
    released = _released(cfg, plan, device)
    kept = sum(size for part, size in parts.items() if part not in released)
    # parameter + gradient (fp32) + optimizer state, in fp32 copies; before the first step only the parameters
    ema = int(cfg.ema_decay is not None and (cfg.ema_device == "device" or device == "cpu"))  # EMA copy
    states = 2 + state_bytes_per_param(plan.optimizer) / 4 + ema
    lora = cost.lora_params * 4
    activations = (int(cost.activation_bytes * ACTIVATION_FACTOR) + cost.largest_activation_bytes) * item // 4
    training = denoiser + kept + int(lora * states) + activations
    vae = parts.get("vae", 0)
    text = sum(size for part, size in parts.items() if part != "vae")
    encoding = max(vae, text + (0 if "vae" in released else vae))  # one after the other; no denoiser yet
    if device == "cuda":
        return _Phases(training, 0, encoding, cost)
    modules = sum(shapes.params.values()) * 4  # 4 bytes per parameter while built (module docstring)
    # single file: the files' tensors + the modules built from them; folder: loaded component by component
    loading = (
        (shapes.file_bytes + modules) if shapes.single_file else modules + max(shapes.params.values()) * 4
    )
    return _Phases(training, loading, encoding, cost)


def _denoiser(shapes: ModelShapes, plan: _Plan, device: str, item: int) -> DenoiserBytes:
    """The denoiser's bytes under the plan's fp8 storage and block swap (on a CPU the swapped blocks stay in the
    same memory: no saving)."""
    swap = plan.swap if device == "cuda" else 0
    return denoiser_bytes(shapes.family, shapes.denoiser, fp8=plan.fp8, swap=swap, item=item)


def _released(cfg: TrainConfig, plan: _Plan, device: str) -> set[str]:
    """Parts the trainer moves off the GPU once their outputs are cached; on a CPU they stay in the process."""
    if device == "cpu":
        return set()
    from ..train.placement import released_parts

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    return released_parts(cfg, device_type=device, processes=processes, text_cached=plan.text_cache)


def _seconds(cost: StepCost, device: str, peak: float) -> tuple[float, float]:
    """(compute seconds, operator-overhead seconds) of one step."""
    attention = min(cost.attention_flops, cost.flops)
    compute = (cost.flops - attention) / (peak * MATMUL_EFFICIENCY[device])
    compute += attention / (peak * ATTENTION_EFFICIENCY[device])
    return compute, cost.ops * OP_OVERHEAD_S[device]


@dataclass
class _Context:
    """What the suggestion search needs besides the plan."""

    cfg: TrainConfig
    shapes: ModelShapes
    device: str
    mode: str
    base_rss: int
    limit: int | None

    def peak(self, plan: _Plan) -> int:
        return _memory(self.cfg, self.shapes, plan, self.device, self.mode).peak + self.base_rss


def _candidates(cfg: TrainConfig, plan: _Plan, family: Any) -> list[tuple[str, _Plan]]:
    """Changes of the preset that lower memory, least costly first (each keeps the ones before it)."""
    out = []
    current = plan
    if not plan.checkpointing:
        current = replace(current, checkpointing=True)
        out.append(("gradient_checkpointing: true", current))
    if not plan.text_cache and not cfg.train_text_encoder:
        current = replace(current, text_cache=True)
        out.append(("cache_text_encoder_outputs: memory", current))
    if family.swap_blocks:
        from .memory_presets import MEMORY_PRESETS

        for name, values in MEMORY_PRESETS.items():
            if plan.fp8 and values["blocks_to_swap"] <= plan.swap:
                continue  # no lighter than the settings already in use
            preset = replace(
                current, checkpointing=True, text_cache=True, fp8=True, swap=values["blocks_to_swap"],
                optimizer=values["optimizer"],
            )  # fmt: skip
            out.append((f"memory_preset: {name}", preset))
    batch = current.batch
    while batch > 1:
        batch //= 2
        current = replace(current, batch=batch)
        steps = plan.batch // batch
        out.append((f"batch_size: {batch} with gradient_accumulation_steps: {steps}", current))
    if plan.rank > 8:
        out.append(("lora_rank: 8", replace(current, rank=8)))
    return out


def _suggest(ctx: _Context, plan: _Plan, peak_bytes: int) -> str | None:
    """The first change of the preset (checkpointing, text cache, batch, rank) whose estimate fits."""
    if ctx.limit is None:
        return None
    if peak_bytes <= 0.9 * ctx.limit:
        if plan.checkpointing and not ctx.cfg.train_text_encoder:
            unchecked = replace(plan, checkpointing=False)
            if ctx.peak(unchecked) <= 0.8 * ctx.limit:
                return "gradient_checkpointing: false fits in memory and saves about a quarter of each step"
        return None
    for what, candidate in _candidates(ctx.cfg, plan, ctx.shapes.family):
        if ctx.peak(candidate) <= 0.9 * ctx.limit:
            return f"this config needs more than the {ctx.limit / GIB:.1f} GiB here; use {what}"
    return (
        f"this config needs more than the {ctx.limit / GIB:.1f} GiB here even with checkpointing and batch 1; "
        "lower the resolution or use a machine with more memory"
    )


def estimate_run(
    cfg: TrainConfig,
    *,
    device: str | None = None,
    memory_limit_bytes: int | None = None,
    overhead_bound: bool | None = None,
    base_rss_bytes: int | None = None,
) -> RunEstimate:
    """Peak memory and s/step of `cfg` on this device, from headers and one meta pass (no weights loaded).

    `memory_limit_bytes` replaces the device's memory as what the suggestion must fit in; `overhead_bound`
    replaces the estimate's own verdict (the trainer passes the one it acted on when it estimates again), and
    `base_rss_bytes` the process size the first estimate saw.
    """
    from ..models.run_defaults import with_family_defaults
    from ..train.setup import resolve_base_model

    cfg = with_family_defaults(cfg)[0]  # a run's config has them already; a config estimated on its own not
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # taken first: the meta pass (first run only) imports diffusers and the matmul-peak measurement leaves freed
    # buffers in the process; LIBRARY_RSS stands for the libraries the run imports later
    if base_rss_bytes is not None:
        base_rss = base_rss_bytes
    else:
        base_rss = _rss_bytes() + LIBRARY_RSS if device == "cpu" else 0
    # the part files the run names; the ones it leaves empty are found as the loader finds them
    shapes = model_shapes(
        resolve_base_model(cfg.base_model), {key: getattr(cfg, key) for key in COMPONENT_KEYS}
    )
    plan = _Plan(
        cfg.batch_size,
        cfg.lora_rank,
        cfg.gradient_checkpointing,
        cfg.cache_text_encoder_outputs != "off" and not cfg.train_text_encoder,
        fp8=bool(cfg.fp8_base),
        swap=cfg.blocks_to_swap or 0,
        optimizer=cfg.optimizer,
    )
    cost = _cost(cfg, shapes, plan)
    # overhead-bound: the operators' fixed cost outweighs their arithmetic even at the fp32 peak
    if overhead_bound is None:
        fp32_compute, overhead = _seconds(cost, device, matmul_peak(torch.float32, device))
        overhead_bound = device == "cpu" and overhead > fp32_compute
    mode = resolve_mode(cfg, device, overhead_bound)
    peak = matmul_peak(_dtype(mode), device)
    phases = _memory(cfg, shapes, plan, device, mode)
    peak_bytes = phases.peak + base_rss
    ctx = _Context(cfg, shapes, device, mode, base_rss, memory_limit_bytes or memory_limit(device))
    compute, overhead = _seconds(cost, device, peak)
    item = torch.tensor([], dtype=_dtype(mode)).element_size()
    swapped = _denoiser(shapes, plan, "cuda", item).swapped if plan.swap else 0
    transfer = 2 * swapped / SWAP_BANDWIDTH if device == "cuda" else 0.0
    accum = cfg.gradient_accumulation_steps
    return RunEstimate(
        peak_memory_bytes=int(peak_bytes),
        seconds_per_step=(compute + overhead + transfer) * accum,
        flops_per_step=cost.flops * accum,
        device=device,
        suggestion=_suggest(ctx, plan, peak_bytes),
        memory_limit_bytes=ctx.limit,
        training_memory_bytes=int(phases.training + base_rss),
        loading_memory_bytes=int(phases.loading + base_rss) if phases.loading else 0,
        encoding_memory_bytes=int(phases.encoding + base_rss),
        matmul_peak_flops=peak,
        resolution=_resolution(cfg, shapes),
        precision=mode,
        overhead_bound=overhead_bound,
        base_rss_bytes=base_rss,
        fp8_base=plan.fp8,
        blocks_to_swap=plan.swap,
        swapped_bytes=swapped,
        optimizer=cfg.optimizer,
        memory_preset=cfg.memory_preset,
        assumed=list(shapes.assumed),
    )
