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
from helpers_train import largest_difference, make_dataset, tiny_config, train_stopped_and_resumed
from safetensors import safe_open
from tiny_flux import build_tiny_flux

from lorascripts.run.events import read_events

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory, tiny_tokenizer):
    return build_tiny_flux(tmp_path_factory.mktemp("flux"), tiny_tokenizer)


def _flux_config(tiny_flux, data: Path, out: Path, **overrides) -> dict:
    return tiny_config(
        tiny_flux, data, out, base_model=str(tiny_flux.transformer), text_max_length=16, **overrides
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
    assert "AUTOMATIC1111" not in report.summary()  # 1.10 does not run FLUX.1: the line names Forge only
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


@pytest.fixture(scope="module")
def diffusers_runs(tiny_flux, tmp_path_factory):
    """A 4-step FLUX run writing `output_format: diffusers` (a file at step 2 and at the end), and the same run
    stopped at step 2 and resumed."""
    from lorascripts.config import config_from_dict
    from lorascripts.train.trainer import train

    root = tmp_path_factory.mktemp("flux_diffusers")
    data = make_dataset(root / "data", n=4)
    cfg = _flux_config(
        tiny_flux,
        data,
        root / "ref",
        max_train_steps=4,
        save_steps=2,
        output_format="diffusers",
        learning_rate=1e-2,
    )
    train(config_from_dict(cfg))
    train_stopped_and_resumed(cfg, root / "cut", 2)
    return root


def test_diffusers_output_has_peft_keys_metadata_and_passes_the_selftest(diffusers_runs) -> None:
    from safetensors.torch import load_file

    ref = diffusers_runs / "ref"
    for name in ("tiny.safetensors", "tiny-step00000002.safetensors"):
        keys = set(load_file(str(ref / name)))
        assert keys and all(k.startswith(("transformer.", "text_encoder.")) for k in keys), sorted(keys)[:3]
        assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
        assert "transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight" in keys
        assert any(k.startswith("text_encoder.text_model.encoder.layers.") for k in keys)
    with safe_open(str(ref / "tiny.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_base_model_version"] == "flux1" and meta["modelspec.architecture"] == "flux-1-dev/lora"
    assert meta["ss_network_dim"] == "4" and meta["ss_steps"] == "4"
    assert meta["ls_output_format"] == "diffusers"  # the scale is in lora_B: read back with alpha = rank
    test = [e for e in read_events(ref / "events.jsonl") if e["event"] == "self_test"][-1]
    assert test["ok"] and "Forge: 0 unmatched keys" in test["summary"], test


def test_diffusers_output_resumes_to_the_uninterrupted_weights(diffusers_runs) -> None:
    worst = largest_difference(
        diffusers_runs / "ref" / "tiny.safetensors", diffusers_runs / "cut" / "tiny.safetensors"
    )
    assert worst < 1e-6, f"resumed weights differ from an uninterrupted run by {worst}"


def test_fluxpipeline_load_lora_weights_applies_our_diffusers_file(diffusers_runs, tiny_flux, caplog) -> None:
    """diffusers' own loader reads the file and changes its transformer and CLIP-L as our network (the same file
    read back, keys converted in memory) changes ours."""
    import torch
    from diffusers import FluxPipeline
    from tiny_flux import transformer_runner

    from lorascripts.models import load_base_model
    from lorascripts.network.from_file import load_lora

    path = diffusers_runs / "ref" / "tiny.safetensors"
    run = transformer_runner()
    base = load_base_model(str(tiny_flux.transformer), tokenizer_path=str(tiny_flux.tokenizer_dir))
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        before, clip_before = run(base.denoiser), base.text_encoders[0](ids).pooler_output
        load_lora(base, path)
        mine, clip_mine = run(base.denoiser), base.text_encoders[0](ids).pooler_output
    assert "stores no lora_alpha" not in caplog.text  # our file says its scale is folded in
    pipe = FluxPipeline.from_pretrained(str(tiny_flux.diffusers_dir))
    pipe.load_lora_weights(str(path))
    with torch.no_grad():
        theirs, clip_theirs = run(pipe.transformer), pipe.text_encoder(ids).pooler_output
    change = (mine - before).norm()
    assert change > 1e-3 * before.norm()
    assert (theirs - mine).norm() < 0.02 * change, (
        f"diffusers differs by {(theirs - mine).norm() / change:.3f}"
    )
    clip_change = (clip_mine - clip_before).norm()
    assert clip_change > 0 and (clip_theirs - clip_mine).norm() < 0.02 * clip_change


def test_initial_lora_reads_a_diffusers_file_with_its_ranks(
    diffusers_runs, tiny_flux, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from lorascripts.config import config_from_dict
    from lorascripts.train.trainer import train

    data = make_dataset(tmp_path / "data", n=2)
    start = diffusers_runs / "ref" / "tiny.safetensors"
    train(
        config_from_dict(
            _flux_config(tiny_flux, data, tmp_path / "o", max_train_steps=1, initial_lora=str(start))
        )
    )
    out = load_file(str(tmp_path / "o" / "tiny.safetensors"))  # kohya, the default
    assert out["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape[0] == 4  # q/k/v share rank 4
    assert out["lora_unet_single_blocks_0_linear1.lora_down.weight"].shape[0] == 8  # 4 + 4, as trained
    diffusers = load_file(str(start))
    assert len({k.rsplit(".lora_", 1)[0] for k in diffusers}) > len({k.split(".")[0] for k in out})


def test_sd_families_refuse_diffusers_output_by_name(tiny_sd1, tmp_path: Path) -> None:
    from lorascripts.config import config_from_dict
    from lorascripts.errors import ConfigError
    from lorascripts.train.trainer import train

    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_sd1, data, tmp_path / "o", max_train_steps=1, output_format="diffusers")
    with pytest.raises(
        ConfigError, match=r"output_format: diffusers` is not available for SD1\.x.*output_format: kohya"
    ):
        train(config_from_dict(cfg))
    with pytest.raises(ConfigError, match="network_type lokr"):
        config_from_dict({**cfg, "network_type": "lokr"})
