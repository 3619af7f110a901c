"""End-to-end training on tiny SD1/SD2/SDXL-shaped models loaded from single-file checkpoints.

Asserts: the loss falls, every key is a valid kohya key that the WebUI rules apply, diffusers loads the file
and reproduces our output, strength 0 is the base model, kill + resume gives the same weights, and the
command line reports bad input clearly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers_train import make_dataset, tiny_config
from safetensors import safe_open
from safetensors.torch import load_file

from lorascripts.config import config_from_dict
from lorascripts.models import load_base_model
from lorascripts.models.families.sd.ldm_names import original_layout_shapes
from lorascripts.network.lora import LoraNetwork, NetworkSpec
from lorascripts.network.webui_check import check_webui_compat
from lorascripts.run.events import read_events
from lorascripts.train.trainer import train

REPO = Path(__file__).resolve().parent.parent
KOHYA_KEY = r"^lora_(unet|te|te1|te2)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$"


def _unet_out(base, seed: int = 0) -> torch.Tensor:
    """U-Net output on a fixed input (with whatever LoRA is hooked in)."""
    g = torch.Generator().manual_seed(seed)
    cfg = base.denoiser.config
    size = cfg.sample_size
    x = torch.randn(1, cfg.in_channels, size, size, generator=g)
    ctx = torch.randn(1, 77, cfg.cross_attention_dim, generator=g)
    kwargs = {}
    if base.family.name == "sdxl":
        proj = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(1, proj, generator=g),
            "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]]),
        }
    with torch.no_grad():
        return base.denoiser(x, torch.tensor([500]), ctx, **kwargs).sample


@pytest.fixture(params=["sd1", "sd2", "sdxl"])
def trained(request, tmp_path_factory, tiny_sd1, tiny_sd2, tiny_sdxl):
    model = {"sd1": tiny_sd1, "sd2": tiny_sd2, "sdxl": tiny_sdxl}[request.param]
    root = tmp_path_factory.mktemp(f"train_{request.param}")
    data = make_dataset(root / "data")
    cfg = config_from_dict(tiny_config(model, data, root / "out", max_train_steps=12, learning_rate=3e-3))
    result = train(cfg)
    return model, cfg, result


def test_training_writes_a_loadable_kohya_file(trained) -> None:
    model, cfg, result = trained
    assert result.lora_path.is_file() and result.steps == cfg.max_train_steps
    tensors = load_file(str(result.lora_path))
    import re

    assert tensors and all(re.match(KOHYA_KEY, k) for k in tensors), [
        k for k in tensors if not re.match(KOHYA_KEY, k)
    ][:3]
    assert all(t.dim() == 0 for k, t in tensors.items() if k.endswith(".alpha"))
    ups = [t for k, t in tensors.items() if k.endswith("lora_up.weight")]
    assert any(t.abs().sum() > 0 for t in ups), "training changed the (zero-initialised) up weights"
    # every key maps to a real module under the WebUI's rules
    base = load_base_model(model.single_file, tokenizer_path=str(model.tokenizer_dir))
    with safe_open(str(result.lora_path), "pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        meta = fh.metadata()
    report = check_webui_compat(shapes, original_layout_shapes(base), base.family)
    assert report.ok, report.summary()
    prefixes = {k.split("_")[1] for k in tensors}
    assert prefixes == ({"unet", "te1", "te2"} if model.family == "sdxl" else {"unet", "te"})
    # metadata, sidecar and resolved config
    assert meta["ss_output_name"] == "tiny" and meta["ss_network_dim"] == "4"
    assert meta["ss_base_model_version"].startswith(
        {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_"}[model.family]
    )
    assert json.loads(meta["ss_tag_frequency"]) and json.loads(meta["ss_bucket_info"])["buckets"]
    # kohya's semantics: 12 steps of 3 an epoch span 4 epochs (`epochs` keeps its default), ss_epoch is 1-based
    assert (meta["ss_num_epochs"], meta["ss_epoch"], cfg.epochs) == ("4", "4", 10)
    assert meta["ss_text_encoder_lr"] == str(cfg.effective_text_encoder_lr)  # the text encoder was trained
    assert int(meta["ss_min_bucket_reso"]) <= 32 <= int(meta["ss_max_bucket_reso"])
    sidecar = json.loads(result.lora_path.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["activation text"] == "zkstyle"
    assert yaml.safe_load(result.lora_path.with_suffix(".yaml").read_text(encoding="utf-8"))["lora_rank"] == 4
    events = [e["event"] for e in read_events(result.output_dir / "events.jsonl")]
    assert events[-1] == "finished" and "step" in events
    steps = [e for e in read_events(result.output_dir / "events.jsonl") if e["event"] == "step"]
    # the first step (warm-up included) is never reported faster than the run as a whole
    assert len(steps) >= 2 and 0 < steps[0]["it_per_s"] <= 2 * steps[-1]["it_per_s"], steps
    assert events.index("loading_model") < events.index("started") < events.index("step")


def test_strength_zero_is_base_and_diffusers_matches(trained) -> None:
    model, cfg, result = trained
    base = load_base_model(model.single_file, tokenizer_path=str(model.tokenizer_dir))
    before = _unet_out(base)
    net = LoraNetwork.create(base, NetworkSpec(rank=4, alpha=4), initial=load_file(str(result.lora_path)))
    net.apply()
    after = _unet_out(base)
    net.set_multiplier(0.0)
    assert torch.equal(_unet_out(base), before), "strength 0 must reproduce the base model exactly"
    net.set_multiplier(1.0)
    assert not torch.allclose(after, before, atol=1e-6), "the LoRA changes the U-Net output"
    net.remove()
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model.diffusers_dir))
    pipe.load_lora_weights(str(result.lora_path.parent), weight_name=result.lora_path.name)
    ours_te = base.family.name
    diffusers_out = _unet_out(type("B", (), {"denoiser": pipe.unet, "family": base.family})())
    assert torch.allclose(diffusers_out, after, atol=1e-4, rtol=1e-3), (
        f"{ours_te}: diffusers output differs by {(diffusers_out - after).abs().max():.2e}"
    )


def test_loss_falls(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=4)
    cfg = config_from_dict(
        tiny_config(
            tiny_sd1,
            data,
            tmp_path / "out",
            max_train_steps=40,
            learning_rate=5e-3,
            batch_size=4,
            train_text_encoder=False,
        )
    )
    train(cfg)
    losses = [e["loss"] for e in read_events(tmp_path / "out" / "events.jsonl") if e["event"] == "step"]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first * 0.9, f"loss did not fall: first {first:.4f}, last {last:.4f}"


def _cli(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


def test_kill_and_resume_gives_same_weights(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    base_cfg = tiny_config(tiny_sd1, data, tmp_path / "ref", max_train_steps=10, save_steps=3, dropout=0.1)
    ref = train(config_from_dict(base_cfg))
    conf = tmp_path / "killed.yaml"
    conf.write_text(yaml.safe_dump({**base_cfg, "output_dir": str(tmp_path / "killed")}), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "--config", str(conf)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    events = tmp_path / "killed" / "events.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(e["event"] == "checkpoint" and e["step"] >= 6 for e in read_events(events)):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "tiny.safetensors").exists(), "the run was killed before finishing"
    done = _cli(["--config", str(conf), "--set", "resume=auto"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = load_file(str(ref.lora_path)), load_file(str(tmp_path / "killed" / "tiny.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-6, f"resumed weights differ from an uninterrupted run by {worst}"
    with safe_open(str(tmp_path / "killed" / "tiny.safetensors"), "pt") as fh:
        assert fh.metadata()["ss_steps"] == "10"


def test_cli_bad_config_and_bad_image(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    conf = tmp_path / "c.yaml"
    conf.write_text(
        yaml.safe_dump({**tiny_config(tiny_sd1, data, tmp_path / "o"), "lerning_rate": 1}), encoding="utf-8"
    )
    bad = _cli(["--config", str(conf)], tmp_path)
    assert (
        bad.returncode == 2 and "Did you mean `learning_rate`" in bad.stderr and "Traceback" not in bad.stderr
    )
    (data / "img_01.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    conf.write_text(yaml.safe_dump(tiny_config(tiny_sd1, data, tmp_path / "o")), encoding="utf-8")
    corrupt = _cli(["--config", str(conf)], tmp_path)
    assert corrupt.returncode == 3 and "img_01.png" in corrupt.stderr and "Traceback" not in corrupt.stderr
    skip = _cli(["--config", str(conf), "--set", "bad_images=skip"], tmp_path)
    assert skip.returncode == 0, skip.stderr[-2000:]


def test_two_process_accelerate_launch(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=8)
    conf = tmp_path / "c.yaml"
    conf.write_text(
        yaml.safe_dump(tiny_config(tiny_sd1, data, tmp_path / "o", max_train_steps=3)), encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        # accelerate's --cpu launches one process (multi-CPU needs MPI); --multi_gpu starts torchrun workers,
        # which our Accelerator(cpu=True) joins with the gloo backend when there is no GPU
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "train.py"),
        "--config",
        str(conf),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    started = next(e for e in read_events(tmp_path / "o" / "events.jsonl") if e["event"] == "started")
    assert started["processes"] == 2
    assert (tmp_path / "o" / "tiny.safetensors").is_file()
