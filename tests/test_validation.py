"""Training you can judge: validation loss (deterministic, resume-safe), the best LoRA / early-stop rule shared
with the text trainer, and the EMA of the LoRA weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_train import make_dataset, tiny_config
from safetensors import safe_open
from safetensors.torch import load_file

from lorascripts.config import config_from_dict
from lorascripts.errors import ConfigError, DatasetError, StopRequested
from lorascripts.models.families.sd.objective import DDPMObjective, sd_noise_scheduler
from lorascripts.run.early_stop import BestTracker
from lorascripts.run.events import STOP_FILE_NAME, read_events
from lorascripts.train.trainer import train
from lorascripts.train.validation import split_validation, validation_items


def test_best_tracker_counts_patience_and_survives_a_checkpoint() -> None:
    tracker = BestTracker(patience=2)
    verdicts = [tracker.update(v, s) for s, v in [(10, 1.0), (20, 0.8), (30, 0.9), (40, float("nan"))]]
    assert [v.improved for v in verdicts] == [True, True, False, False]
    assert [v.stop for v in verdicts] == [False, False, False, True]
    assert tracker.best == (0.8, 20)
    again = BestTracker(patience=2)
    again.restore(BestTracker(best=(0.8, 20), bad_evals=1).state())
    assert again.update(0.85, 50).stop and again.best == (0.8, 20)


def test_validation_split_and_config_errors(tmp_path: Path) -> None:
    base = {"base_model": "toy", "train_data_dir": str(tmp_path)}
    cfg = config_from_dict({**base, "validation_split": 0.25, "seed": 5})
    items = list(range(8))
    train_items, held = split_validation(items, cfg)
    assert len(held) == 2 and sorted(train_items + held) == items
    assert split_validation(items, cfg) == (train_items, held), "seeded: the same split every time"
    with pytest.raises(DatasetError, match="leaving none to train on"):
        split_validation(items, config_from_dict({**base, "validation_split": 8}))
    with pytest.raises(DatasetError, match="validation_dir .*nope is not a folder"):
        validation_items(config_from_dict({**base, "validation_dir": str(tmp_path / "nope")}), [])
    with pytest.raises(ConfigError, match="needs a validation loss"):
        config_from_dict({**base, "early_stopping_patience": 3})
    with pytest.raises(ConfigError, match="keep only one"):
        config_from_dict({**base, "validation_split": 2, "validation_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"unknown key `ema.decy`.*decay"):
        config_from_dict({**base, "ema": {"decy": 0.9}})
    nested = config_from_dict({**base, "ema": {"decay": 0.99, "start_step": 5, "device": "cpu"}})
    assert (nested.ema_decay, nested.ema_start_step, nested.ema_device) == (0.99, 5, "cpu")
    objective = DDPMObjective(sd_noise_scheduler(), "epsilon", None)
    assert objective.validation_timesteps(4).tolist() == [125, 375, 625, 875]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _validations(out: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_events(out / "events.jsonl") if e["event"] == "validation"}


def test_validation_and_ema_are_deterministic_and_resume_exactly(tiny_sd1, tmp_path: Path) -> None:
    """Stopped at step 2 and resumed, a run with validation + EMA ends with the weights, EMA and validation
    curve of an uninterrupted one; the EMA file differs from the raw one; the best LoRA is the best step's."""
    data = make_dataset(tmp_path / "data", n=6)
    settings = dict(
        max_train_steps=6,
        validation_split=2,
        validate_every_n_steps=2,
        ema={"decay": 0.5, "save": "both"},
        save_steps=2,
        keep_last_n=1,
    )
    whole = train(config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "a", **settings)))
    cfg = tiny_config(tiny_sd1, data, tmp_path / "b", resume="auto", **settings)

    def stop_at_3(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 3:
            (tmp_path / "b" / STOP_FILE_NAME).touch()

    with pytest.raises(StopRequested):
        train(config_from_dict(cfg), callbacks=[stop_at_3])
    resumed = train(config_from_dict(cfg))
    assert resumed.steps == whole.steps == 6
    curve = _validations(tmp_path / "a")
    assert sorted(curve) == [2, 4, 6] and _validations(tmp_path / "b") == curve
    for name in ("tiny.safetensors", "tiny-ema.safetensors", "tiny-best.safetensors"):
        a, b = _weights(tmp_path / "a" / name), _weights(tmp_path / "b" / name)
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6, name
    raw, ema = (
        _weights(tmp_path / "a" / "tiny.safetensors"),
        _weights(tmp_path / "a" / "tiny-ema.safetensors"),
    )
    assert max((raw[k] - ema[k]).abs().max().item() for k in raw) > 1e-4, "EMA weights are an average"
    best_step = min(curve, key=curve.get)
    with safe_open(str(tmp_path / "a" / "tiny-best.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert float(meta["ls_validation_loss"]) == pytest.approx(curve[best_step], abs=1e-6)
    assert meta["ss_steps"] == str(best_step)


def test_estimate_counts_the_ema_copy_where_it_lives(tiny_sd1, tmp_path: Path) -> None:
    from lorascripts.perf import estimate
    from lorascripts.perf.configs import model_shapes

    shapes = model_shapes(str(tiny_sd1.single_file))
    plan = estimate._Plan(batch=1, rank=4, checkpointing=False, text_cache=False)

    def gpu(**fields):
        cfg = config_from_dict(tiny_config(tiny_sd1, tmp_path, tmp_path / "o", **fields))
        return estimate._memory(cfg, shapes, plan, "cuda", "bf16")

    plain, cost = gpu().training, gpu().cost
    assert gpu(ema_decay=0.999).training - plain == cost.lora_params * 4, "one fp32 copy of the LoRA"
    assert gpu(ema_decay=0.999, ema_device="cpu").training == plain, "kept in CPU memory, not on the GPU"


def _memorise_and_hold_out(root: Path) -> tuple[Path, Path]:
    """6 styled toy pictures, each captioned with its neighbour's content (only memorising fits them), and
    4 held-out ones captioned truthfully: what the LoRA learns in general helps the held-out pictures at
    first, what it memorises then hurts them."""
    import random

    from lorascripts.data.captions import write_metadata
    from lorascripts.toy.scenes import random_scene
    from lorascripts.toy.style import apply_style

    rng = random.Random(7)
    scenes = [random_scene(rng, 64) for _ in range(10)]
    folders = root / "train", root / "held_out"
    for folder, indices in zip(folders, (range(6), range(6, 10))):
        folder.mkdir(parents=True)
        rows = {}
        for i in indices:
            apply_style(scenes[i][0]).save(folder / f"p{i}.png")
            caption = scenes[(i + 1) % 6 if i < 6 else i][1]
            rows[f"p{i}.png"] = f"zkstyle, {caption}"
        write_metadata(folder / "metadata.csv", rows)
    return folders


def test_toy_overfitting_is_seen_and_the_best_lora_is_kept(tmp_path: Path) -> None:
    train_dir, held_out = _memorise_and_hold_out(tmp_path)
    out = tmp_path / "out"
    cfg = {
        "base_model": "toy",
        "train_data_dir": str(train_dir),
        "validation_dir": str(held_out),
        "validate_every_n_steps": 5,
        "early_stopping_patience": 3,
        "output_dir": str(out),
        "output_name": "o",
        "resolution": 64,
        "bucket_reso_steps": 8,
        "min_bucket_reso": 32,
        "lora_rank": 16,
        "lora_alpha": 16,
        "learning_rate": 1e-2,
        "batch_size": 6,
        "max_train_steps": 80,
        "train_text_encoder": False,
        "cache_text_encoder_outputs": "memory",
        "mixed_precision": "no",
        "seed": 1,
        "logging": False,
        "dataset_checks": "off",
        "save_precision": "fp32",
        "log_every_n_steps": 5,
    }
    result = train(config_from_dict(cfg))
    events = read_events(out / "events.jsonl")
    curve = _validations(out)
    training = {e["step"]: e["loss"] for e in events if e["event"] == "step"}
    best = min(curve, key=curve.get)
    after = [s for s in curve if s > best]
    print({s: (round(training[s], 4), round(curve[s], 4)) for s in curve})
    assert 5 < best and len(after) == 3, f"validation fell, then rose 3 times: {curve}"
    assert all(curve[s] > curve[best] for s in after) and curve[after[-1]] > 1.15 * curve[best]
    assert min(training[s] for s in after) < min(training[s] for s in curve if s <= best), (
        "the training loss still reaches new lows while the validation loss rises"
    )
    stop = [e for e in events if e["event"] == "early_stop"]
    assert stop and stop[0]["best_step"] == best and result.steps == after[-1] < 80
    finished = events[-1]
    assert finished["event"] == "finished" and finished["best_step"] == best
    assert finished["best_lora"] == str(out / "o-best.safetensors")
    with safe_open(str(out / "o-best.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_steps"] == str(best)
    assert float(meta["ls_validation_loss"]) == pytest.approx(curve[best], abs=1e-6)


def test_chart_and_webui_session_show_the_validation_loss() -> None:
    import numpy as np

    from lorascripts.host.charts import VALIDATION_COLOUR, loss_chart

    def orange_pixels(image) -> int:
        return int((np.asarray(image) == np.array(VALIDATION_COLOUR)).all(axis=-1).sum())

    train_only = loss_chart([(1, 0.5), (2, 0.4), (3, 0.3)])
    both = loss_chart([(1, 0.5), (2, 0.4), (3, 0.3)], validation=[(1, 0.45), (3, 0.42)])
    assert orange_pixels(both) > orange_pixels(train_only) + 50, "the validation curve is drawn"

    from lora_scripts_webui.session import TrainingSession

    session = TrainingSession()
    for event in (
        {"event": "step", "step": 2, "total_steps": 4, "loss": 0.5},
        {"event": "validation", "step": 2, "loss": 0.6},
    ):
        session._on_event(event)  # the events a training child reports, as the session's reader hands them on
    assert session.snapshot().validation == [(2, 0.6)]


def test_sdxl_validation_with_size_conditioning_and_ema_on_cpu(tiny_sdxl, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=3)
    cfg = tiny_config(
        tiny_sdxl,
        data,
        tmp_path / "out",
        max_train_steps=2,
        validation_split=1,
        validate_every_n_steps=1,
        ema_decay=0.9,
        ema_device="cpu",
    )
    result = train(config_from_dict(cfg))
    curve = _validations(tmp_path / "out")
    assert sorted(curve) == [1, 2] and all(v == v and v > 0 for v in curve.values())
    with safe_open(str(result.lora_path), "pt") as fh:
        assert fh.metadata()["ls_ema_decay"] == "0.9"


def test_ema_follows_then_averages_and_puts_the_trained_weights_back() -> None:
    from lorascripts.train.ema import LoraEMA, split_ema_tensors

    weight = torch.nn.Parameter(torch.zeros(3))
    ema = LoraEMA([weight], decay=0.5, start_step=2, update_every=2, device=torch.device("cpu"))
    seen = []
    for step, value in enumerate([1.0, 2.0, 4.0, 8.0, 16.0], start=1):
        weight.data.fill_(value)
        ema.update(step)
        seen.append(ema.shadow[0][0].item())
    # steps 1-2 copy; step 3 is skipped (update_every 2); step 4: (2 + 8) / 2; step 5 skipped
    assert seen == [1.0, 2.0, 2.0, 5.0, 5.0]
    with ema.applied():
        assert weight[0].item() == 5.0
    assert weight[0].item() == 16.0, "the trained weights come back"
    network, saved = split_ema_tensors({"lora_unet_x.lora_down.weight": torch.ones(1), **ema.state_dict()})
    assert list(network) == ["lora_unet_x.lora_down.weight"]
    fresh = LoraEMA([weight], 0.5, 0, 1, torch.device("cpu"))
    assert fresh.load_state_dict(saved) and fresh.shadow[0][0].item() == 5.0
    assert not fresh.load_state_dict({}), "a checkpoint without EMA is reported, not half-loaded"
