"""FLUX.1's memory path for 8-24 GB cards, on the CPU: fp8 base weights (stored fp8, computed in bf16), block swap
(each swapped block in place exactly while it computes: forward, checkpoint recomputation, backward), 8-bit AdamW
states (bitsandbytes), and the pre-flight estimate / memory presets on a full-size FLUX.1-dev header."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import struct
from pathlib import Path

import pytest
import torch
from helpers_train import make_dataset, tiny_config
from safetensors.torch import load_file, save_file
from tiny_flux import bfl_shapes, bfl_transformer, build_tiny_flux

from lorascripts.config import config_from_dict
from lorascripts.errors import ConfigError
from lorascripts.models import load_base_model
from lorascripts.models.block_swap import BlockSwapper, swapped_blocks
from lorascripts.models.fp8 import FP8
from lorascripts.models.weights import keep_float8
from lorascripts.run.events import read_events
from lorascripts.train.memory import apply_memory_options
from lorascripts.train.trainer import train

GIB = 2**30


@pytest.fixture(scope="module")
def flux(tmp_path_factory, tiny_tokenizer):
    """The tiny FLUX with 2 double and 4 single blocks (kohya's swap units need pairs of single blocks), its
    parts in ComfyUI's folders, and an fp8 e4m3fn copy of the transformer as ComfyUI's fp8 files hold it."""
    tiny = build_tiny_flux(tmp_path_factory.mktemp("flux_mem"), tiny_tokenizer)
    folder = tiny.transformer.parent
    state = bfl_transformer(7, doubles=2, singles=4)
    save_file(state, str(folder / "flux1-blocks.safetensors"))
    fp8 = {k: v.to(FP8) if v.dim() == 2 else v.to(torch.bfloat16) for k, v in state.items()}
    save_file(fp8, str(folder / "flux1-blocks-fp8.safetensors"))
    return tiny, folder / "flux1-blocks.safetensors", folder / "flux1-blocks-fp8.safetensors"


def _forget_precision() -> None:
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


@pytest.fixture
def own_precision():
    """accelerate keeps one process-wide precision: this file's bf16 run must not meet the fp32 runs of others."""
    _forget_precision()
    yield
    _forget_precision()


class _Poisoned(BlockSwapper):
    """A swapper whose blocks hold NaN while away: any computation with an absent block poisons the result."""

    def away(self, copy: torch.Tensor) -> torch.Tensor:
        return torch.full_like(copy, float("nan"))


def _base(flux, path: Path, fp8: bool = False):
    tiny = flux[0]
    with keep_float8() if fp8 else contextlib.nullcontext():
        base = load_base_model(str(path), tokenizer_path=str(tiny.tokenizer_dir), dtype=torch.bfloat16)
    base.denoiser.requires_grad_(False)
    return base


def _step(base, seed: int = 0) -> tuple[float, torch.Tensor]:
    """One training step's loss and LoRA gradients (LoRA on every block Linear, lycoris as the run builds it)."""
    from lorascripts.network.lora import LoraNetwork, NetworkSpec

    torch.manual_seed(seed)
    network = LoraNetwork.create(base, NetworkSpec(rank=2, alpha=2, train_text_encoder=False))
    for module in network.lora_modules.values():
        torch.nn.init.normal_(module.lora_up.weight, std=0.05)  # a LoRA that changes the output
    network.apply()
    gen = torch.Generator().manual_seed(seed)
    cond = {"hidden": torch.randn(2, 8, 32, generator=gen), "pooled": torch.randn(2, 32, generator=gen)}
    noisy = torch.randn(2, 16, 4, 4, generator=gen)
    base.denoiser.train()
    out = base.family.predict(base, noisy, torch.tensor([0.3, 0.7]), cond)
    loss = out.float().pow(2).mean()
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in network.parameters()])
    network.remove()
    return loss.item(), grads


def test_fp8_base_stores_block_linears_in_fp8_and_halves_their_bytes(flux) -> None:
    """An fp8 file stays fp8 (kept at load), a bf16 file is stored fp8; the blocks' Linear bytes halve against
    bf16, everything outside them is bf16, and a training step's gradients stay close to bf16's."""
    _, bf16_path, fp8_path = flux
    plain = _base(flux, bf16_path)
    cfg = config_from_dict({"base_model": str(bf16_path), "train_data_dir": ".", "fp8_base": True})

    def block_bytes(base) -> int:
        return sum(
            m.weight.numel() * m.weight.element_size()
            for name in ("transformer_blocks", "single_transformer_blocks")
            for m in getattr(base.denoiser, name).modules()
            if isinstance(m, torch.nn.Linear)
        )

    total = lambda base: sum(p.numel() * p.element_size() for p in base.denoiser.parameters())  # noqa: E731
    for path, kept in ((fp8_path, True), (bf16_path, False)):
        base = _base(flux, path, fp8=kept)
        if kept:  # loaded without an upcast copy: the file's fp8 matrices as they are
            assert base.denoiser.single_transformer_blocks[0].proj_out.weight.dtype == FP8
        assert apply_memory_options(cfg, base, torch.device("cpu"), torch.bfloat16) is None
        linears = [m for m in base.denoiser.modules() if isinstance(m, torch.nn.Linear)]
        in_blocks = {id(m) for n in ("transformer_blocks", "single_transformer_blocks")
                     for m in getattr(base.denoiser, n).modules()}  # fmt: skip
        assert all((m.weight.dtype == FP8) == (id(m) in in_blocks) for m in linears)
        assert all(p.dtype in (FP8, torch.bfloat16) for p in base.denoiser.parameters())
        assert block_bytes(base) * 2 == block_bytes(plain)
        assert total(base) < 0.65 * total(plain), (total(base), total(plain))
    loss8, grads8 = _step(base)
    loss16, grads16 = _step(plain)
    assert torch.isfinite(grads8).all() and abs(loss8 - loss16) < 0.1 * loss16
    assert (grads8 - grads16).norm() < 0.2 * grads16.norm()  # fp8 rounding of the same weights


@pytest.mark.parametrize("checkpointing, fp8", [(True, False), (False, False), (True, True)])
def test_block_swap_gives_the_same_step_and_moves_each_block_in_and_out(flux, checkpointing, fp8) -> None:
    """Swapped blocks hold NaN while away: equal loss and gradients prove each was in place whenever it
    computed (forward, recomputation, backward); the counters show each came in twice (forward, backward)."""
    _, path, _ = flux
    reference = _base(flux, path)
    swapped = _base(flux, path)
    for base in (reference, swapped):
        if fp8:
            cfg = config_from_dict({"base_model": str(path), "train_data_dir": ".", "fp8_base": True})
            apply_memory_options(cfg, base, torch.device("cpu"), torch.bfloat16)
        if checkpointing:
            base.denoiser.enable_gradient_checkpointing()
    blocks = swapped_blocks(
        swapped.family, swapped.denoiser, 3
    )  # 1 double + 2x2 single blocks (kohya's rule)
    assert blocks == [swapped.denoiser.transformer_blocks[1], *swapped.denoiser.single_transformer_blocks]
    swapper = _Poisoned(blocks, torch.device("cpu"))
    assert swapper.offloads == 5 and swapper.onloads == 0  # away from the start
    loss, grads = _step(reference)
    swap_loss, swap_grads = _step(swapped)
    assert swap_loss == loss and torch.equal(swap_grads, grads)
    assert swapper.onloads == 2 * len(blocks) and swapper.offloads == 5 + 2 * len(blocks)
    assert all(torch.isnan(p).all() for b in blocks for p in b.parameters())  # all away after the step
    with torch.no_grad():  # a sample / validation forward: in once, out once
        swapped.family.predict(swapped, torch.zeros(1, 16, 4, 4), torch.tensor([0.5]),
                               {"hidden": torch.zeros(1, 8, 32), "pooled": torch.zeros(1, 32)})  # fmt: skip
    assert swapper.onloads == 3 * len(blocks)


def test_swap_and_fp8_refusals_name_the_key(flux, tiny_sd1, tmp_path: Path) -> None:
    _, path, _ = flux
    base = _base(flux, path)
    with pytest.raises(
        ConfigError, match=r"blocks_to_swap: 5 is more than this FLUX\.1 model has; at most 4"
    ):
        swapped_blocks(base.family, base.denoiser, 5)
    sd = load_base_model(str(tiny_sd1.single_file), tokenizer_path=str(tiny_sd1.tokenizer_dir))
    for key in ("fp8_base", "blocks_to_swap"):
        cfg = config_from_dict(
            {"base_model": "x", "train_data_dir": ".", key: 2 if key == "blocks_to_swap" else True,
             "gradient_checkpointing": True}
        )  # fmt: skip
        with pytest.raises(ConfigError, match=rf"{key}: SD1\.x .*set {key}: (false|0)"):
            apply_memory_options(cfg, sd, torch.device("cpu"), torch.float32)
    preset = config_from_dict({"base_model": "x", "train_data_dir": ".", "memory_preset": "12gb"})
    with pytest.raises(ConfigError, match=r"memory_preset: 12gb is for diffusion transformers .*not SD1\.x"):
        apply_memory_options(preset, sd, torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match="blocks_to_swap` needs gradient_checkpointing: true"):
        config_from_dict({"base_model": "x", "train_data_dir": ".", "blocks_to_swap": 2})


def test_training_with_fp8_swap_and_8bit_adamw_equals_the_run_without_swap(
    flux, tmp_path: Path, caplog, own_precision
) -> None:
    """The 12 GB recipe on the CPU: fp8 base + block swap + bitsandbytes' AdamW8bit; the LoRA trains (finite
    loss, weights move), is saved in fp32, and equals the same run without swap."""
    pytest.importorskip(
        "bitsandbytes", reason="optimizer adamw8bit needs bitsandbytes (requirements-dev.txt)"
    )
    tiny, path, fp8_path = flux
    data = make_dataset(tmp_path / "data", n=2)
    common = dict(
        base_model=str(fp8_path), max_train_steps=3, text_max_length=16, mixed_precision="bf16",
        fp8_base=True, optimizer="adamw8bit", gradient_checkpointing=True, learning_rate=1e-2,
        train_text_encoder=False, cache_text_encoder_outputs="memory",
    )  # fmt: skip
    results = {}
    caplog.set_level(logging.INFO, logger="lorascripts")
    for swap in (0, 3):
        out = tmp_path / f"swap{swap}"
        train(config_from_dict(tiny_config(tiny, data, out, blocks_to_swap=swap, **common)))
        events = read_events(out / "events.jsonl")
        losses = [e["loss"] for e in events if e["event"] == "step"]
        assert len(losses) == 3 and all(0 < v < 10 for v in losses)
        estimate = next(e for e in events if e["event"] == "estimate")
        assert estimate["fp8_base"] and estimate["blocks_to_swap"] == swap
        assert estimate["optimizer"] == "adamw8bit" and "fp8 base" in estimate["summary"]
        assert (
            "fp8 base: 36 Linear weights of the FLUX.1 blocks" in caplog.text
        )  # 2 x 10 double + 4 x 4 single
        assert ("block swap: 5 of the FLUX.1 blocks" in caplog.text) == bool(swap)  # 1 double + 2 x 2 single
        caplog.clear()
        results[swap] = load_file(str(out / "tiny.safetensors"))
    tensors = results[3]
    assert {v.dtype for v in tensors.values()} == {torch.float32}  # save_precision fp32, never fp8
    ups = [v for k, v in tensors.items() if k.endswith("lora_up.weight")]
    assert ups and all(v.abs().max() > 0 for v in ups)  # lora_up starts at zero: it trained
    assert all(torch.equal(results[0][k], v) for k, v in tensors.items())


def _setup_only(cfg: dict):
    """A run's parts set up as train() sets them up (model, caches, network, prepared module), no step taken."""
    from lorascripts.run.events import EventSink
    from lorascripts.train.run_parts import build_parts
    from lorascripts.train.trainer import total_steps_for

    parts = build_parts(config_from_dict(cfg), total_steps_for)
    parts.setup_rest(EventSink(parts.output_dir / "events.jsonl", None))
    return parts


def test_caches_fill_before_the_denoiser_is_placed_and_prepare_leaves_released_encoders_out(
    flux, tmp_path: Path, own_precision
) -> None:
    """kohya's order, run with `offload_encoders: on` (the GPU's bookkeeping on the CPU) and block swap: the VAE
    alone while the latents are cached, then CLIP-L + T5 while the captions are, each released before the
    transformer's resident part is placed; accelerate's prepare() does not take the released encoders back (they
    are not in the prepared module); samples and an uncached caption borrow them and give them back; loss and
    LoRA equal the run that keeps everything placed (`offload_encoders: off`)."""
    tiny, path, _ = flux
    data = make_dataset(tmp_path / "data", n=2)
    common = dict(
        base_model=str(path), max_train_steps=2, text_max_length=16, mixed_precision="bf16", blocks_to_swap=3,
        train_text_encoder=False, cache_text_encoder_outputs="memory", gradient_checkpointing=True,
    )  # fmt: skip
    parts = _setup_only(tiny_config(tiny, data, tmp_path / "setup", offload_encoders="on", **common))
    try:
        timeline = parts.placement.timeline
        events = [m.event for m in timeline]
        assert events == [
            "placed VAE", "latents cached", "released VAE", "placed text encoder 1", "placed text encoder 2",
            "captions cached", "released text encoder 1", "released text encoder 2", "placed denoiser", "prepared",
        ], events  # fmt: skip
        at = {m.event: m.on_device for m in timeline}
        assert at["latents cached"] == {"VAE"}  # neither the denoiser nor T5 beside the VAE
        assert at["captions cached"] == {"text encoder 1", "text encoder 2"}
        assert at["placed denoiser"] == at["prepared"] == {"denoiser"}
        released = list(parts.placement.released.values())
        assert released == [parts.base.vae, *parts.base.text_encoders]
        module = parts.accelerator.unwrap_model(parts.module)
        held = {id(p) for p in module.parameters()}
        assert len(module.text_encoders) == 0 and module.denoiser is parts.base.denoiser
        assert not any(id(p) in held for m in released for p in m.parameters())
        assert parts.swapper is not None and parts.swapper.onloads == 0  # placed, not yet run
        parts.conditioning.text(["zkstyle a caption never seen"])  # encoded with the encoders borrowed back
        parts.module.train()  # as the trainer does before the first step: frozen encoders stay in eval
        assert not any(m.training for m in parts.base.text_encoders)
        assert [m.event for m in timeline[len(events) :]] == [
            "borrowed text encoder 1, text encoder 2",
            "returned text encoder 1, text encoder 2",
        ]
        assert timeline[-1].on_device == {"denoiser"}
    finally:
        parts.close()
    results = {}
    for mode in ("off", "on"):
        out = tmp_path / mode
        train(config_from_dict(tiny_config(tiny, data, out, offload_encoders=mode, **common)))
        losses = [e["loss"] for e in read_events(out / "events.jsonl") if e["event"] == "step"]
        results[mode] = losses, load_file(str(out / "tiny.safetensors"))
    assert len(results["on"][0]) == 2 and results["on"][0] == results["off"][0]
    assert all(torch.equal(results["off"][1][k], v) for k, v in results["on"][1].items())


def _sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> Path:
    """A .safetensors file with these shapes (`dtype`: safetensors' name, 2 or 1 bytes: "BF16", "F16",
    "F8_E4M3") whose data is a hole (sparse: no disk space, header only)."""
    header, offset = {}, 0
    item = 1 if dtype.startswith("F8") else 2
    for name, shape in shapes.items():
        size = item * int(torch.tensor(shape).prod()) if shape else item
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)
    return path


@pytest.fixture(scope="module")
def full_flux(tmp_path_factory) -> Path:
    shapes = bfl_shapes(hidden=3072, head_dim=128, doubles=19, singles=38, text=(4096, 768))
    return _sparse_safetensors(tmp_path_factory.mktemp("flux_full") / "flux1-dev.safetensors", shapes)


def test_full_flux_estimate_falls_with_fp8_and_swap_and_auto_picks_the_card_preset(
    full_flux, tmp_path
) -> None:
    """FLUX.1-dev at 1024 px from its header only (meta tensors; no part files beside it, so the published
    CLIP-L / T5-XXL / VAE sizes): the training phase's GPU memory bf16 > fp8 > fp8 + swap > + 8-bit states, with
    the figures in the report; the peak is the larger of that and the caching phase (the run caches latents with
    the VAE alone on the GPU, then captions with CLIP-L + T5-XXL, 9.1 GiB, and places the transformer only after
    they left), and `memory_preset: auto` picks the published recipe of each card."""
    from lorascripts.perf.estimate import estimate_run
    from lorascripts.perf.memory_presets import resolve_memory_preset

    base = dict(
        base_model=str(full_flux), train_data_dir=str(tmp_path), resolution=1024, lora_rank=16, batch_size=2,
        gradient_checkpointing=True, train_text_encoder=False, cache_text_encoder_outputs="disk",
        cache_latents="disk", mixed_precision="bf16",
    )  # fmt: skip
    runs = {
        "bf16": {},
        "fp8": {"fp8_base": True},
        "fp8 + swap 16": {"fp8_base": True, "blocks_to_swap": 16},
        "fp8 + swap 16 + 8-bit": {"fp8_base": True, "blocks_to_swap": 16, "optimizer": "adamw8bit"},
    }
    estimates = {
        name: estimate_run(config_from_dict({**base, **extra}), device="cuda", memory_limit_bytes=24 * GIB)
        for name, extra in runs.items()
    }
    training = [e.training_memory_bytes for e in estimates.values()]
    assert training == sorted(training, reverse=True) and len(set(training)) == 4, training
    assert 20 * GIB < training[0] < 40 * GIB  # 11.9 B bf16 weights alone are 22 GiB
    assert training[0] - training[1] > 10 * GIB  # the blocks' Linear weights: ~11.6 GB less
    for name, e in estimates.items():
        print(
            f"{name}: training {e.training_memory_bytes / GIB:.2f}, caching {e.encoding_memory_bytes / GIB:.2f}"
        )
        assert e.peak_memory_bytes == max(e.training_memory_bytes, e.encoding_memory_bytes)
        # the text encoders alone (CLIP-L 123 M + T5-XXL 4.76 B parameters in bf16), whatever the denoiser's settings
        assert e.encoding_memory_bytes == pytest.approx((123_060_480 + 4_762_310_656) * 2, rel=0.01)
        assert e.encoding_memory_bytes < e.training_memory_bytes  # the caching phase is no longer the peak
    from lorascripts.perf.configs import model_shapes
    from lorascripts.perf.denoiser_memory import denoiser_bytes

    shapes = model_shapes(str(full_flux))
    fp8 = denoiser_bytes(shapes.family, shapes.denoiser, fp8=True, swap=0, item=2)
    assert (
        0.49 < fp8.device / (shapes.params["unet"] * 2) < 0.52
    )  # the transformer's bytes halve against bf16
    report = estimates["fp8 + swap 16"].describe()
    assert "fp8 base" in report and "16 swap units (4." in report, report  # 8 double + 16 single: ~4.7 GiB
    picked, steps_fit = {}, {}
    for card in (24, 16, 12):
        cfg, tried = resolve_memory_preset(
            config_from_dict({**base, "memory_preset": "auto"}), "cuda", card * GIB
        )
        picked[card] = (cfg.memory_preset, cfg.fp8_base, cfg.blocks_to_swap, cfg.optimizer)
        steps_fit[card] = next(n for n, e in tried if e.training_memory_bytes <= 0.9 * card * GIB)
        for name, estimate in tried:
            print(f"{card} GB card, {name}: {estimate.describe()}")
    # the training steps fit the published recipe of each card (kohya's 24/16/12 GB settings), and so does the
    # caching before them: T5-XXL is on the GPU only while the transformer is not (train/run_setup.py)
    assert steps_fit == {24: "24gb", 16: "16gb", 12: "12gb"}, steps_fit
    assert picked == {
        24: ("24gb", True, 0, "adamw"),
        16: ("16gb", True, 8, "adamw"),
        12: ("12gb", True, 16, "adamw8bit"),
    }, picked
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_with_text_encoder_training_only_the_adapted_encoder_trains_t5_stays_in_eval(flux) -> None:
    """CLIP-L carries LoRA layers and trains; FLUX's T5 has none and keeps its dropout off, as kohya keeps it."""
    from lorascripts.network.lora import LoraNetwork, NetworkSpec
    from lorascripts.train.step import DiffusionLoRAModule

    base = _base(flux, flux[1])
    network = LoraNetwork.create(base, NetworkSpec(rank=2, alpha=2, train_text_encoder=True))
    clip, t5 = base.text_encoders
    adapted = {id(m.org_module[0]) for m in network.lora_modules.values()}
    assert any(id(m) in adapted for m in clip.modules()) and not any(id(m) in adapted for m in t5.modules())
    module = DiffusionLoRAModule(
        base, network, base.family.objective(base, min_snr_gamma=None), clip_skip=0, train_text_encoder=True
    )
    module.train()
    assert clip.training and not t5.training and base.denoiser.training
    frozen = DiffusionLoRAModule(base, network, base.family.objective(base, min_snr_gamma=None), clip_skip=0)
    frozen.train()
    assert not clip.training and not t5.training
