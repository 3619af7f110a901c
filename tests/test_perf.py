"""The performance helpers: FLOP counting against hand computation and torch's own counter, the pre-flight
estimate (emitted before the model loads, sane numbers), and that speed options change no results."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers_train import make_dataset, tiny_config
from safetensors.torch import load_file

from lorascripts.config import config_from_dict
from lorascripts.models.families import get_family
from lorascripts.perf.configs import denoiser_config_for, model_shapes
from lorascripts.perf.flops import count_flops, train_step_cost
from lorascripts.run.events import read_events
from lorascripts.train.trainer import train


@pytest.fixture(scope="module", autouse=True)
def _own_user_cache(tmp_path_factory):
    """Matmul peaks and step costs are cached per user; the tests keep theirs out of the real home."""
    saved = os.environ.get("LORA_SCRIPTS_CACHE")
    os.environ["LORA_SCRIPTS_CACHE"] = str(tmp_path_factory.mktemp("user-cache"))
    yield
    if saved is None:
        os.environ.pop("LORA_SCRIPTS_CACHE")
    else:
        os.environ["LORA_SCRIPTS_CACHE"] = saved


def test_attention_flops_match_hand_computation() -> None:
    from diffusers.models.attention_processor import Attention

    n, m, dim, ctx_dim, heads, head_dim = 64, 77, 32, 48, 4, 8
    inner = heads * head_dim

    def build() -> torch.nn.Module:
        return Attention(dim, cross_attention_dim=ctx_dim, heads=heads, dim_head=head_dim)

    forward, total = count_flops(
        build, [(2, n, dim), (2, m, ctx_dim)], keyword_names=("encoder_hidden_states",)
    )
    projections = 2 * n * dim * inner + 2 * (2 * m * ctx_dim * inner) + 2 * n * inner * dim
    attention = 2 * (2 * n * m * inner)  # Q K^T and the weighted sum of V, every head
    assert forward == 2 * (projections + attention)  # batch of 2
    # backward through frozen weights: one input-gradient matmul per projection; attention as the fused
    # kernels run it: scores recomputed, then gradients of scores, Q, K and V (5 matmuls for 2 forward)
    assert total - forward == 2 * projections + 5 * attention


def test_unet_forward_flops_equal_torch_counter_on_the_math_kernel(tiny_sd1) -> None:
    """The meta count includes attention, like torch's counter run on the (countable) math SDPA kernel."""
    from diffusers import UNet2DConditionModel
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    config = denoiser_config_for(str(tiny_sd1.single_file))
    cost = train_step_cost(get_family("sd1"), config, batch=2, height=64, width=64, text_len=77)
    unet = UNet2DConditionModel(**config).eval()
    sample = torch.randn(2, 4, 8, 8)
    context = torch.randn(2, 77, config["cross_attention_dim"])
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        unet(sample, torch.tensor([10, 500]), context)
    assert cost.unet_forward_flops == counter.get_total_flops()
    assert cost.flops > 2 * cost.unet_forward_flops  # backward + LoRA
    checkpointed = train_step_cost(
        get_family("sd1"), config, batch=2, height=64, width=64, gradient_checkpointing=True
    )
    assert checkpointed.flops > cost.flops and checkpointed.activation_bytes < cost.activation_bytes
    assert checkpointed.lora_params == cost.lora_params > 0


def test_model_shapes_from_the_header_match_the_loaded_model(tiny_sd1) -> None:
    from lorascripts.models import load_base_model

    shapes = model_shapes(str(tiny_sd1.single_file))
    base = load_base_model(str(tiny_sd1.single_file), tokenizer_path=str(tiny_sd1.tokenizer_dir))
    assert shapes.family.name == "sd1"
    assert shapes.params["unet"] == sum(p.numel() for p in base.denoiser.parameters())
    assert shapes.denoiser["block_out_channels"] == list(base.denoiser.config.block_out_channels)
    assert shapes.resolution == base.resolution


def _events(out: Path) -> list[dict]:
    return list(read_events(out / "events.jsonl"))


def test_estimate_is_emitted_before_loading_and_is_sane(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_sd1, data, tmp_path / "out", max_train_steps=2, mixed_precision="auto")
    train(config_from_dict(cfg))
    events = _events(tmp_path / "out")
    names = [e["event"] for e in events]
    assert names.index("estimate") < names.index("loading_model")
    est = next(e for e in events if e["event"] == "estimate")
    assert est["summary"].startswith("estimate: ") and "GiB peak" in est["summary"]  # what hosts show
    shapes = model_shapes(str(tiny_sd1.single_file))
    weights = sum(shapes.params.values()) * 4
    assert weights < est["peak_memory_bytes"] < 8 * 2**30
    assert est["loading_memory_bytes"] >= shapes.file_bytes + weights
    assert 0 < est["seconds_per_step"] < 60
    expected = train_step_cost(
        shapes.family,
        shapes.denoiser,
        batch=2,
        height=32,
        width=32,
        text_encoder_configs=shapes.text_encoders,
        rank=4,
        train_text_encoder=True,
    )
    assert est["flops_per_step"] == pytest.approx(expected.flops, rel=1e-6)
    # a tiny model is overhead-bound on CPU: auto precision picks fp32 there (bf16 casts cost more than they save)
    assert est["overhead_bound"] and est["precision"] == "no"
    assert next(e for e in events if e["event"] == "started")["precision"] == "no"


def test_estimate_suggests_a_preset_that_fits(tiny_sd1, tmp_path: Path) -> None:
    from lorascripts.perf import estimate

    data = make_dataset(tmp_path / "data", n=1)
    cfg = config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "out", batch_size=2, resolution=1024))
    fits = estimate.estimate_run(cfg)
    assert fits.suggestion is None
    squeezed = estimate.estimate_run(cfg, memory_limit_bytes=int(fits.peak_memory_bytes * 0.9))
    assert squeezed.suggestion and "gradient_checkpointing: true" in squeezed.suggestion
    hopeless = estimate.estimate_run(cfg, memory_limit_bytes=2**20)
    assert "lower the resolution" in hopeless.suggestion


@pytest.mark.parametrize(
    "option, values",
    [
        ("cpu_threads", (1, 2)),
        ("channels_last", ("off", "on")),
        ("optimizer_args", ({"fused": False}, {})),  # {}: the default, torch's fused AdamW kernel
    ],
)
def test_speed_options_change_nothing_but_speed(tiny_sd1, tmp_path: Path, option, values) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    results = []
    for i, value in enumerate(values):
        out = tmp_path / f"run{i}"
        cfg = tiny_config(tiny_sd1, data, out, max_train_steps=2, **{option: value})
        results.append(train(config_from_dict(cfg)))
    a, b = (load_file(str(r.lora_path)) for r in results)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert results[0].final_loss == pytest.approx(results[1].final_loss, rel=1e-4)
    assert torch.get_num_threads() >= 1  # restored after the run


def test_speed_defaults_pick_the_measured_winners(tiny_sd1, tmp_path: Path) -> None:
    from lorascripts.run.optim import create_optimizer
    from lorascripts.train.setup import use_channels_last

    # channels-last where it was measured to help (bf16 convolutions on CPU), the user's choice otherwise
    assert use_channels_last("auto", "cpu", torch.bfloat16)
    assert not use_channels_last("auto", "cpu", torch.float32)
    assert not use_channels_last("auto", "cuda", torch.bfloat16)
    assert use_channels_last("on", "cuda", torch.float32)
    assert not use_channels_last("off", "cpu", torch.bfloat16)
    data = make_dataset(tmp_path / "data", n=1)
    params = [{"params": [torch.nn.Parameter(torch.zeros(3))]}]
    cpu = torch.device("cpu")

    def optimizer(**args):
        cfg = config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "o", **args))
        return create_optimizer(cfg, params, cpu)

    assert optimizer().defaults["fused"] is True
    # the user's kernel choice wins
    assert optimizer(optimizer_args={"foreach": True}).defaults["fused"] is None
    assert optimizer(optimizer_args={"fused": False}).defaults["fused"] is False


def test_estimate_keeps_the_first_process_size(tiny_sd1, tmp_path: Path) -> None:
    """The trainer estimates twice (before and after choosing threads); the second must not count what the
    first one's matmul-peak measurement left in the process."""
    from lorascripts.perf import estimate

    data = make_dataset(tmp_path / "data", n=1)
    cfg = config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "out"))
    first = estimate.estimate_run(cfg)
    assert first.base_rss_bytes > estimate.LIBRARY_RSS
    again = estimate.estimate_run(cfg, base_rss_bytes=first.base_rss_bytes + 2**30)
    assert again.peak_memory_bytes - first.peak_memory_bytes == 2**30
    assert first.event()["summary"] == first.short() and first.short().startswith("estimate: ")


def test_disk_caches_are_reused_by_a_run_in_another_folder(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    shared = tmp_path / "shared-cache"
    common = dict(
        max_train_steps=2,
        cache_latents="disk",
        cache_text_encoder_outputs="disk",
        train_text_encoder=False,
        cache_dir=str(shared),
    )
    first = train(config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "a", **common)))
    files = sorted((shared / "latents").glob("*.safetensors")) + sorted(
        (shared / "text").glob("*.safetensors")
    )
    assert len(list((shared / "text").glob("*.safetensors"))) == 2  # one per distinct processed caption
    stamps = [p.stat().st_mtime_ns for p in files]
    second = train(config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "b", **common)))
    assert [p.stat().st_mtime_ns for p in files] == stamps, "nothing was encoded again"
    a, b = load_file(str(first.lora_path)), load_file(str(second.lora_path))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cached_encoders_are_released_and_borrowed_back_for_samples(tiny_sd1, tmp_path: Path, caplog) -> None:
    """`offload_encoders: on` runs on CPU the bookkeeping that frees GPU memory under `auto` on a GPU: the VAE and
    the text encoder are released once their outputs are cached, samples borrow them back, results unchanged."""
    data = make_dataset(tmp_path / "data", n=3)
    common = dict(
        max_train_steps=2,
        train_text_encoder=False,
        cache_text_encoder_outputs="memory",
        sample_prompts=["zkstyle a red circle"],
        sample_every_n_steps=1,
        sample_steps=2,
    )
    runs = {}
    for mode in ("off", "on"):
        caplog.clear()
        with caplog.at_level("INFO", logger="lorascripts"):
            cfg = tiny_config(tiny_sd1, data, tmp_path / mode, offload_encoders=mode, **common)
            runs[mode] = train(config_from_dict(cfg))
        released = [r.getMessage() for r in caplog.records if "released to the CPU" in r.getMessage()]
        if mode == "on":
            assert [m.split(" released")[0] for m in released] == ["VAE", "text encoder 1"], released
            # before the U-Net is placed and the network built (accelerate's prepare() leaves them out)
            messages = [r.getMessage() for r in caplog.records]
            last_release = max(i for i, m in enumerate(messages) if "released to the CPU" in m)
            assert last_release < next(i for i, m in enumerate(messages) if m.startswith("LoRA network:"))
        else:
            assert not released
        samples = sorted((tmp_path / mode / "samples").glob("*.png"))
        assert [p.name for p in samples] == [
            "step-00000001-00.png",
            "step-00000002-00.png",
        ]  # + the final one
    a, b = (load_file(str(r.lora_path)) for r in runs.values())
    assert all(torch.equal(a[k], b[k]) for k in a)
    same = [(tmp_path / m / "samples" / "step-00000001-00.png").read_bytes() for m in ("off", "on")]
    assert same[0] == same[1]


def test_estimate_leaves_released_encoders_out_of_gpu_memory(tiny_sd1, tmp_path: Path) -> None:
    from lorascripts.perf import estimate

    data = make_dataset(tmp_path / "data", n=1)
    shapes = model_shapes(str(tiny_sd1.single_file))
    plan = estimate._Plan(batch=1, rank=4, checkpointing=False, text_cache=True)

    def gpu_bytes(**fields):
        cfg = config_from_dict(
            tiny_config(tiny_sd1, data, tmp_path / "o", train_text_encoder=False, **fields)
        )
        return estimate._memory(cfg, shapes, plan, "cuda", "bf16")

    kept = gpu_bytes(offload_encoders="off")
    freed = (shapes.params["vae"] + shapes.params["text"]) * 2  # bf16
    assert kept.training - gpu_bytes().training == freed
    shuffled = gpu_bytes(shuffle_caption=True)
    assert kept.training - shuffled.training == shapes.params["vae"] * 2  # new captions need the encoder
    # while the caches fill the U-Net and the LoRA are not on the device yet: the VAE, then the text encoder (the
    # VAE gone when it is released, beside it when kept); the peak is the larger phase
    released, vae, text = gpu_bytes(), shapes.params["vae"] * 2, shapes.params["text"] * 2
    assert released.encoding == max(vae, text) and kept.encoding == vae + text
    assert released.peak == max(released.training, released.encoding)


def test_attention_share_is_counted_and_timed_at_its_own_rate(tiny_sd1) -> None:
    """CPU attention runs far below the matmul rate: the step estimate times its FLOPs separately."""
    from lorascripts.perf import estimate

    shapes = model_shapes(str(tiny_sd1.single_file))
    small, large = (
        train_step_cost(shapes.family, shapes.denoiser, batch=1, height=px, width=px, rank=4)
        for px in (32, 64)
    )
    assert 0 < small.attention_flops < small.flops and 0 < large.attention_flops < large.flops
    # 4x the tokens: self-attention grows 16x, cross-attention 4x
    assert 4 < large.attention_flops / small.attention_flops < 16
    peak = 1e12
    compute, _ = estimate._seconds(large, "cpu", peak)
    dense = (large.flops - large.attention_flops) / (peak * estimate.MATMUL_EFFICIENCY["cpu"])
    assert compute == pytest.approx(
        dense + large.attention_flops / (peak * estimate.ATTENTION_EFFICIENCY["cpu"])
    )


def test_disk_caches_clean_what_killed_runs_left_and_spare_running_writes(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    shared = tmp_path / "cache"
    leftovers = {}
    for kind in ("latents", "text"):
        (shared / kind).mkdir(parents=True)
        stale = shared / kind / ".abc.safetensors-dead.partial"  # a write a kill -9 interrupted
        fresh = shared / kind / ".def.safetensors-live.partial"  # another run writing right now
        stale.write_bytes(b"half")
        fresh.write_bytes(b"half")
        old = stale.stat().st_mtime - 2 * 3600
        os.utime(stale, (old, old))
        leftovers[kind] = (stale, fresh)
    cfg = tiny_config(
        tiny_sd1,
        data,
        tmp_path / "out",
        max_train_steps=1,
        cache_latents="disk",
        cache_text_encoder_outputs="disk",
        train_text_encoder=False,
        cache_dir=str(shared),
    )
    train(config_from_dict(cfg))
    for kind, (stale, fresh) in leftovers.items():
        assert not stale.exists() and fresh.exists(), kind
        written = sorted((shared / kind).glob("*.safetensors"))
        assert written and all(load_file(str(p)) for p in written)
