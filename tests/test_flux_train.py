"""FLUX.1 training options on the tiny FLUX: two processes through `accelerate launch` (DDP with gloo on the
CPU), `timestep_sampling: flux_shift` in a real run, and `output_format: diffusers` files that diffusers'
`FluxPipeline.load_lora_weights` applies as our network does."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers_train import make_dataset, tiny_config
from safetensors import safe_open
from tiny_flux import build_tiny_flux

from lorascripts.run.events import read_events

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory, tiny_tokenizer):
    return build_tiny_flux(tmp_path_factory.mktemp("flux"), tiny_tokenizer)


def _flux_config(tiny_flux, data: Path, out: Path, **overrides) -> dict:
    return tiny_config(
        tiny_flux, data, out, base_model=str(tiny_flux.transformer), t5_max_length=16, **overrides
    )


def test_two_process_accelerate_launch_trains_flux(tiny_flux, tmp_path: Path) -> None:
    """As the SD test: `accelerate launch --multi_gpu --num_processes 2` on the CPU; both ranks step together
    (a rank that did not would hang the gradient all-reduce), one LoRA file, finite losses, the batch of both."""
    data = make_dataset(tmp_path / "data", n=8)
    conf = tmp_path / "c.yaml"
    cfg = _flux_config(tiny_flux, data, tmp_path / "o", max_train_steps=3, timestep_sampling="flux_shift")
    conf.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "train.py"), "--config", str(conf),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    events = read_events(tmp_path / "o" / "events.jsonl")
    started = next(e for e in events if e["event"] == "started")
    assert started["processes"] == 2 and started["family"] == "flux1"
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert losses and all(math.isfinite(v) and v > 0 for v in losses)
    assert next(e for e in events if e["event"] == "finished")["steps"] == 3
    assert sorted(p.name for p in (tmp_path / "o").glob("*.safetensors")) == ["tiny.safetensors"]
    with safe_open(str(tmp_path / "o" / "tiny.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_total_batch_size"] == "4"  # batch 2 on each of the 2 ranks
    assert meta["ss_base_model_version"] == "flux1"


def _kohya_file(tiny_flux, path: Path) -> Path:
    """Our kohya FLUX file for the tiny model (a fresh network with non-zero ups), without a training run."""
    import torch

    from lorascripts.models import load_base_model
    from lorascripts.network.lora import LoraNetwork, NetworkSpec
    from lorascripts.network.save import save_lora_file

    base = load_base_model(str(tiny_flux.transformer), tokenizer_path=str(tiny_flux.tokenizer_dir))
    torch.manual_seed(0)
    network = LoraNetwork.create(base, NetworkSpec(rank=2, alpha=2.0))
    with torch.no_grad():
        for module in network.lora_modules.values():
            module.lora_up.weight.normal_(0, 0.1)
    tensors = base.family.lora_file_tensors(base, network.kohya_state_dict())
    meta = base.family.lora_metadata(v_prediction=False, resolution=32)
    return save_lora_file(path, tensors, meta)


def test_selftest_applies_forges_twelve_key_rule(tiny_flux, tmp_path: Path) -> None:
    """Forge applies a file with at most 12 keys its maps leave over and rejects the whole file past that."""
    from safetensors.torch import load_file, save_file

    from lorascripts.toolbox.selftest import self_test

    ours = _kohya_file(tiny_flux, tmp_path / "ours.safetensors")
    report = self_test(ours, tiny_flux.all_in_one)
    assert report.ok and report.webui.forge_unmatched == [], report.summary()
    assert "Forge: 0 unmatched keys (limit 12)" in report.summary()
    tensors = load_file(str(ours))
    keys = sorted(tensors)
    for count, rejects in ((12, False), (13, True)):
        renamed = {("lora_unet_renamed_" + k if k in keys[:count] else k): v for k, v in tensors.items()}
        path = tmp_path / f"renamed{count}.safetensors"
        save_file(renamed, str(path), metadata={"ss_base_model_version": "flux1"})
        report = self_test(path, tiny_flux.all_in_one)
        assert len(report.webui.forge_unmatched) == count and report.webui.forge_rejects is rejects
        assert not report.ok  # renamed modules are dropped by every loader anyway
        summary = report.summary()
        assert f"Forge: {count} unmatched keys (limit 12)" in summary, summary
        if rejects:
            assert "would reject the whole file" in summary and "lora_unet_renamed_" in summary, summary
        else:
            assert "loads the rest" in summary, summary
