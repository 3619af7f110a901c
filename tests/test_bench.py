"""The benchmark suite end to end in --quick mode: the tiny workload, our trainer and the reference loop, each in
its own process, as `python -m bench.run` runs them. Checks the result files, not the speed (targets live in
the benchmark itself): every column is there with sane values, and the summary is derived from the raw times."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
ROW_FIELDS = (
    "startup_s",
    "seconds_per_step",
    "images_per_s",
    "peak_rss_bytes",
    "mfu",
    "runs",
    "dtype",
    "seconds_per_step_spread",
)


def _steady(run: dict) -> float:
    """s/step recomputed from the raw step times: end of the warm-up steps to the last step."""
    steady = [(n, t) for n, t in run["step_times"] if n >= run["warmup"]]
    (n0, t0), (n1, t1) = steady[0], steady[-1]
    return (t1 - t0) / (n1 - n0)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--work", str(out / "work")]
    proc = subprocess.run(args, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (json_path,) = out.glob("*-quick.json")
    (md_path,) = out.glob("*-quick.md")
    return json.loads(json_path.read_text()), md_path.read_text(), proc.stdout


def test_rows_have_every_column_with_sane_values(quick):
    result, _, _ = quick
    rows = {(r["workload"], r["contender"]): r for r in result["rows"]}
    assert set(rows) == {("tiny-64", "ours"), ("tiny-64", "reference")}
    for row in rows.values():
        assert row["status"] == "ok", row
        for name in ROW_FIELDS:
            assert row[name] is not None, (row["contender"], name)
        assert 0 < row["startup_s"] < 600
        assert 0 < row["seconds_per_step"] < 120
        assert row["peak_rss_bytes"] > 100 * 2**20  # torch + a model is never under 100 MiB
        assert 0 < row["mfu"] < 1.5
    assert rows[("tiny-64", "reference")]["dtype"] == "fp32"
    assert result["matmul_peak"]["bf16"] > 0 and result["matmul_peak"]["fp32"] > 0
    (workload,) = result["workloads"]
    assert workload["flops_per_step"] > 1e8  # the toy U-Net at 64 px, batch 4: ~1 GFLOP per step


def test_summary_is_computed_from_the_raw_timings(quick):
    result, _, _ = quick
    runs = {r["contender"]: r for r in result["runs"]}
    for contender, run in runs.items():
        assert run["error"] is None
        assert [n for n, _ in run["step_times"]] == list(range(1, len(run["step_times"]) + 1))
        assert run["startup_s"] == pytest.approx(run["step_times"][0][1] - run["launched_at"])
        row = next(r for r in result["rows"] if r["contender"] == contender)
        assert row["seconds_per_step"] == pytest.approx(_steady(run))
        assert row["images_per_s"] == pytest.approx(run["batch"] / _steady(run))
        flops = result["workloads"][0]["flops_per_step"]
        peak = result["matmul_peak"][row["dtype"]]
        assert row["mfu"] == pytest.approx(flops / _steady(run) / peak)
    (ratio,) = result["ratios"]
    assert ratio["versus"] == "reference"
    expected = _steady(runs["reference"]) / _steady(runs["ours"])
    assert ratio["min"] == pytest.approx(expected) and ratio["median"] == pytest.approx(expected)


def test_same_lora_layers_and_the_estimate_is_checked(quick):
    result, _, _ = quick
    runs = {r["contender"]: r for r in result["runs"]}
    # the reference loop's peft adapter covers exactly the layers our default LoRA covers
    assert runs["ours"]["extra"]["lora_modules"] == runs["reference"]["extra"]["lora_modules"] > 0
    (estimate,) = result["estimates"]
    measured = runs["ours"]["peak_rss_bytes"]
    assert estimate["measured_peak_bytes"] == measured
    assert estimate["peak_error_pct"] == pytest.approx(
        100 * (estimate["estimated_peak_bytes"] / measured - 1)
    )
    assert estimate["step_error_pct"] == pytest.approx(
        100 * (estimate["estimated_seconds_per_step"] / _steady(runs["ours"]) - 1)
    )


def test_markdown_table_is_written_and_printed(quick):
    _, md, stdout = quick
    for text in (
        "| workload | contender |",
        "| tiny-64 | ours |",
        "| tiny-64 | reference |",
        "Ours / theirs",
    ):
        assert text in md
    assert "| tiny-64 | ours |" in stdout


def test_quick_and_dry_runs_read_the_cached_peak_full_runs_measure_it() -> None:
    """The quick and dry modes prove the command, so they skip the 10-20 s peak measurement; a real run measures
    the peak at its start unless told otherwise."""
    from bench.run import parse_args

    assert parse_args([]).peak == "measure" and parse_args(["--workloads", "sd15-256"]).peak == "measure"
    assert parse_args(["--quick"]).peak == "cached" and parse_args(["--dry"]).peak == "cached"
    assert parse_args(["--dry", "--peak", "measure"]).peak == "measure"


def test_gpu_workloads_are_skipped_here_with_their_reason_and_keep_their_presets() -> None:
    """The GPU rows (run by bench/device_run.sh on a lent GPU machine) say why they are empty on this one."""
    from dataclasses import replace

    import torch

    from bench.ours import train_config
    from bench.run import skip_reasons
    from bench.workloads import WORKLOADS

    low_vram = WORKLOADS["sdxl-1024-ckpt"]
    assert low_vram.only == ("ours",) and low_vram.gradient_checkpointing and low_vram.needs_gpu
    tiny = WORKLOADS["tiny-64"]  # the toy model: building the config needs no SDXL checkpoint
    assert "gradient_checkpointing" not in train_config(tiny, Path("out"))
    assert train_config(replace(tiny, gradient_checkpointing=True), Path("out"))["gradient_checkpointing"]
    reasons = skip_reasons(low_vram, ["ours", "reference"])
    if torch.cuda.is_available():
        assert reasons == {"reference": "sdxl-1024-ckpt is measured for ours only"}
    else:
        assert reasons == {"ours": "no GPU", "reference": "no GPU"}
    assert skip_reasons(WORKLOADS["sd15-256"], ["ours", "reference"]) == {}


# --- FLUX.1: the tiny CPU workload (ours vs the plain flow-matching loop) and the GPU rows' device command ---


def _bench(tmp_path_factory, *extra: str) -> dict:
    out = tmp_path_factory.mktemp("bench-flux")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "bench.run", *extra, "--out", str(out), "--work", str(out / "work")]
    proc = subprocess.run(args, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (json_path,) = out.glob("*.json")
    return json.loads(json_path.read_text())


@pytest.fixture(scope="module")
def flux_quick(tmp_path_factory):
    """flux-tiny-64 with both contenders, a few steps each."""
    extra = ["--workloads", "flux-tiny-64", "--contenders", "ours,reference", "--steps", "4", "--warmup", "2"]
    return _bench(tmp_path_factory, *extra, "--repeats", "1", "--peak", "cached")


def _check_dit_cpu_rows(result: dict, lora_modules: int) -> dict:
    """A tiny DiT workload's rows: both contenders ok with sane figures, the reference in fp32, the same number
    of LoRA layers, the ratio recomputed from the raw step times; returns the workload record."""
    rows = {r["contender"]: r for r in result["rows"]}
    assert set(rows) == {"ours", "reference"}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert 0 < row["seconds_per_step"] < 60 and 0 < row["startup_s"] < 600
        assert row["peak_rss_bytes"] > 100 * 2**20 and 0 < row["mfu"] < 1.5
    assert rows["reference"]["dtype"] == "fp32"
    runs = {r["contender"]: r for r in result["runs"]}
    assert runs["ours"]["extra"]["lora_modules"] == runs["reference"]["extra"]["lora_modules"] == lora_modules
    (ratio,) = result["ratios"]
    assert ratio["median"] == pytest.approx(_steady(runs["reference"]) / _steady(runs["ours"]))
    (workload,) = result["workloads"]
    assert workload["settings"]["text_length"] == 128
    return workload


def test_flux_cpu_workload_rows(flux_quick) -> None:
    # the same LoRA layers: kohya's FLUX set (1 double block: 8, 1 single block: q/k/v, proj_mlp, proj_out)
    workload = _check_dit_cpu_rows(flux_quick, 11)
    assert workload["flops_per_step"] > 1e9  # width 384, 384 tokens, batch 2: ~10 GFLOP per step


def test_flux_reference_loop_is_flow_matching_on_the_same_layers() -> None:
    """The reference's peft targets are exactly the layers our default FLUX LoRA trains (kohya's set: fused q/k/v,
    no modulation, no embedders or final layer), and ours is configured as the reference runs (sigmoid sigmas,
    the same T5 length)."""
    from bench.ours import train_config
    from bench.reference_dit import ADAPTERS
    from bench.workloads import WORKLOADS

    pattern = re.compile(ADAPTERS["flux1"].lora_targets())
    names = [
        "transformer_blocks.0.attn.to_qkv", "transformer_blocks.0.attn.to_added_qkv",
        "transformer_blocks.3.attn.to_out.0", "transformer_blocks.0.attn.to_add_out", "transformer_blocks.0.ff.net.2",
        "transformer_blocks.0.ff_context.net.0.proj", "single_transformer_blocks.7.attn.to_qkv",
        "single_transformer_blocks.0.proj_mlp", "single_transformer_blocks.0.proj_out",
    ]  # fmt: skip
    assert all(pattern.match(n) for n in names)
    for left_out in ("proj_out", "transformer_blocks.0.norm1.linear", "single_transformer_blocks.0.norm.linear",
                     "x_embedder", "transformer_blocks.0.attn.to_q", "context_embedder"):  # fmt: skip
        assert not pattern.match(left_out), left_out
    cfg = train_config(WORKLOADS["flux-tiny-64"], Path("out"))
    assert cfg["timestep_sampling"] == "sigmoid" and cfg["text_max_length"] == 128
    assert cfg["cache_text_encoder_outputs"] == "memory" and "mixed_precision" not in cfg


def _check_gpu_rows(model: str, expected: dict[str, dict]) -> None:
    """The GPU rows `expected` (name: preset settings) are `model` at 1024 px, batch 1, GPU only, ours only, with
    gradient checkpointing and exactly those settings."""
    from bench.workloads import WORKLOADS

    for name, settings in expected.items():
        w = WORKLOADS[name]
        assert (w.model, w.resolution, w.batch, w.needs_gpu, w.only) == (model, 1024, 1, True, ("ours",))
        assert w.gradient_checkpointing and dict(w.settings) == settings


def test_flux_gpu_rows_are_in_the_device_plan_with_their_settings() -> None:
    from dataclasses import fields

    from bench.flux_random import FULL
    from bench.run import skip_reasons
    from bench.workloads import WORKLOADS
    from lorascripts.config.schema import TrainConfig

    expected = {
        "flux-1024-bf16": {},
        "flux-1024-fp8": {"fp8_base": True},
        "flux-1024-fp8-swap16": {"fp8_base": True, "blocks_to_swap": 16},
    }
    known = {f.name for f in fields(TrainConfig)}
    _check_gpu_rows("flux-random", expected)
    for name, settings in expected.items():
        w = WORKLOADS[name]
        reasons = skip_reasons(w, ["ours"])
        missing = sorted(set(settings) - known)
        if missing:  # the memory keys come from another branch: the row says so instead of failing
            assert reasons == {
                "ours": f"config key {', '.join(k for k in settings if k in missing)} not in this lorascripts"
            }
        elif not torch.cuda.is_available():
            assert reasons == {"ours": "no GPU"}
    assert FULL["transformer"]["num_layers"] == 19 and FULL["transformer"]["num_single_layers"] == 38
    script = (REPO / "bench" / "device_run.sh").read_text()
    assert "flux-1024-fp8-swap16 flux-1024-fp8 flux-1024-bf16" in script


def test_flux_device_command_dry(tmp_path: Path) -> None:
    """`bash bench/device_run.sh flux` end to end on this CPU with tiny stand-ins: every row and the table."""
    env = {**os.environ, "BENCH_DRY": "1", "OUT": str(tmp_path), "BENCH_WORK": str(tmp_path / "work"),
           "PYTHON": sys.executable}  # fmt: skip
    proc = subprocess.run(["bash", "bench/device_run.sh", "flux"], cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    assert table.strip() in proc.stdout
    lines = {
        line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| flux")
    }
    assert set(lines) == {"flux-1024-bf16", "flux-1024-fp8", "flux-1024-fp8-swap16"}
    assert "| ok |" in lines["flux-1024-bf16"] and "gradient_checkpointing=True" in lines["flux-1024-bf16"]
    for name in ("flux-1024-fp8", "flux-1024-fp8-swap16"):
        assert "| ok |" in lines[name] or "| skipped: config key" in lines[name], lines[name]
    assert "blocks_to_swap=16" in lines["flux-1024-fp8-swap16"]
    assert "goal (FLUX.1" in table
    (bf16_json,) = (tmp_path / "flux-1024-bf16").glob("*.json")
    (run,) = json.loads(bf16_json.read_text())["runs"]
    assert run["error"] is None and len(run["step_times"]) == 3  # --dry: 3 steps at 64 px


# --- Z-Image: the tiny CPU workload (ours vs the plain flow-matching loop) and the GPU rows' device command ---


@pytest.fixture(scope="module")
def zimage_quick(tmp_path_factory):
    """zimage-tiny-64 with both contenders, a few steps each."""
    extra = [
        "--workloads",
        "zimage-tiny-64",
        "--contenders",
        "ours,reference",
        "--steps",
        "3",
        "--warmup",
        "1",
    ]
    return _bench(tmp_path_factory, *extra, "--repeats", "1", "--peak", "cached")


def test_zimage_cpu_workload_rows(zimage_quick) -> None:
    # the same LoRA layers: q, k, v, out, w1, w2, w3 in 2 layers + 1 noise and 1 context refiner
    workload = _check_dit_cpu_rows(zimage_quick, 28)
    assert workload["flops_per_step"] > 1e9  # width 384, 256 image tokens + the caption's, batch 2


def test_zimage_reference_loop_trains_the_layers_ours_trains() -> None:
    """The reference's peft targets select exactly the layers our default Z-Image LoRA trains on the same
    diffusers transformer (no modulation, embedders or final layer), and ours runs as the reference does."""
    from tiny_zimage import diffusers_transformer

    from bench.ours import train_config
    from bench.reference_dit import ADAPTERS
    from bench.workloads import WORKLOADS
    from lorascripts.config.rules import DEFAULT_TARGET_MODULES
    from lorascripts.models.families.zimage.lora_layout import transformer_targets
    from lorascripts.network.targets import expand_roles

    model = diffusers_transformer(0)
    pattern = re.compile(ADAPTERS["zimage"].lora_targets())
    theirs = {name for name, _ in model.named_modules() if pattern.match(name)}
    ours = {t.path for t in transformer_targets(model, expand_roles(DEFAULT_TARGET_MODULES))}
    assert theirs == ours and len(ours) == 4 * 7
    assert "context_refiner.0.attention.to_k" in ours and "layers.1.adaLN_modulation.0" not in theirs
    cfg = train_config(WORKLOADS["zimage-tiny-64"], Path("out"))
    assert cfg["timestep_sampling"] == "sigmoid" and cfg["text_max_length"] == 128
    assert cfg["base_model"].endswith("z_image_tiny.safetensors") and "qwen" in cfg["tokenizer_path"]


def test_zimage_gpu_rows_are_in_the_device_plan_with_their_settings() -> None:
    import inspect

    from diffusers import ZImageTransformer2DModel

    from bench.zimage_random import FULL

    expected = {
        "zimage-1024-bf16": {},
        "zimage-1024-fp8": {"fp8_base": True},
        "zimage-1024-fp8-swap15": {"fp8_base": True, "blocks_to_swap": 15},
    }
    _check_gpu_rows("zimage-random", expected)
    # the published architecture: diffusers' defaults are Z-Image's, ours states them
    signature = inspect.signature(ZImageTransformer2DModel.__init__).parameters
    for key in ("dim", "n_layers", "n_refiner_layers", "n_heads", "cap_feat_dim", "axes_dims"):
        assert FULL["transformer"][key] == signature[key].default, key
    assert FULL["qwen3"]["hidden_size"] == FULL["transformer"]["cap_feat_dim"] == 2560
    script = (REPO / "bench" / "device_run.sh").read_text()
    assert "zimage-1024-fp8-swap15 zimage-1024-fp8 zimage-1024-bf16" in script


def test_zimage_device_command_dry(tmp_path: Path) -> None:
    """`bash bench/device_run.sh zimage` on this CPU with the tiny stand-in, its hardest preset only (fp8 base +
    block swap; the other two rows run the same code with fewer settings)."""
    env = {**os.environ, "BENCH_DRY": "1", "OUT": str(tmp_path), "BENCH_WORK": str(tmp_path / "work"),
           "PYTHON": sys.executable, "WORKLOADS": "zimage-1024-fp8-swap15"}  # fmt: skip
    proc = subprocess.run(["bash", "bench/device_run.sh", "zimage"], cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    (line,) = [line for line in table.splitlines() if line.startswith("| zimage")]
    assert "| ok |" in line and "blocks_to_swap=15" in line and "fp8_base=True" in line, table
    (result,) = (tmp_path / "zimage-1024-fp8-swap15").glob("*.json")
    (run,) = json.loads(result.read_text())["runs"]
    assert run["error"] is None and len(run["step_times"]) == 3  # --dry: 3 steps at 64 px
