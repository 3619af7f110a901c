"""Training options end to end on the tiny models: network types, incremental training, caches, samples,
v-prediction, clear stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_train import make_dataset, tiny_config
from safetensors import safe_open

from lorascripts.config import config_from_dict
from lorascripts.errors import ModelError
from lorascripts.models import load_base_model
from lorascripts.models.families.sd.ldm_names import original_layout_shapes
from lorascripts.network.webui_check import check_webui_compat
from lorascripts.run.events import read_events
from lorascripts.train.trainer import train


def _shapes_and_meta(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), "pt") as fh:
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}, fh.metadata()


@pytest.mark.parametrize("network_type", ["locon", "loha", "lokr"])
def test_network_types_train_and_pass_the_webui_check(network_type, tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(
        tiny_sd1, data, tmp_path / "out", network_type=network_type, conv_rank=2, max_train_steps=2
    )
    result = train(config_from_dict(cfg))
    shapes, meta = _shapes_and_meta(result.lora_path)
    base = load_base_model(str(tiny_sd1.single_file), tokenizer_path=str(tiny_sd1.tokenizer_dir))
    report = check_webui_compat(shapes, original_layout_shapes(base), base.family)
    assert report.ok, report.summary()
    assert any("resnets" in k or "downsamplers" in k for k in shapes), "conv layers are trained"
    args = json.loads(meta["ss_network_args"])
    assert args["conv_dim"] == "2"
    marker = {"locon": "lora_down.weight", "loha": "hada_w1_a", "lokr": "lokr_w"}[network_type]
    assert any(marker in k for k in shapes)
    if network_type != "locon":
        assert meta["ss_network_module"] == "lycoris.kohya" and args["algo"] == network_type


def test_incremental_training_keeps_counting(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    first = train(config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "a", max_train_steps=3)))
    second = train(
        config_from_dict(
            tiny_config(tiny_sd1, data, tmp_path / "b", max_train_steps=2, initial_lora=str(first.lora_path))
        )
    )
    _, meta = _shapes_and_meta(second.lora_path)
    assert meta["ss_steps"] == "5"
    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import load_file, save_file

    save_file(
        load_file(str(first.lora_path)), str(wrong), metadata={"ss_base_model_version": "sdxl_base_v1-0"}
    )
    with pytest.raises(Exception, match="trained on sdxl"):
        train(config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "c", initial_lora=str(wrong))))


def test_caches_samples_and_tensorboard(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=3)
    cfg = tiny_config(
        tiny_sd1,
        data,
        tmp_path / "out",
        max_train_steps=4,
        cache_latents="disk",
        cache_text_encoder_outputs="memory",
        train_text_encoder=False,
        sample_prompts=["a red circle"],
        sample_every_n_steps=2,
        sample_steps=2,
        logging=True,
    )
    first = train(config_from_dict(cfg))
    cached = sorted((tmp_path / "out" / "cache" / "latents").glob("*.safetensors"))
    distinct = {(data / f"img_{i:02d}.png").read_bytes() for i in range(3)}
    assert len(cached) == len(distinct)  # keyed by content: identical pictures share one entry
    stamps = [p.stat().st_mtime_ns for p in cached]
    second = train(
        config_from_dict(
            {**cfg, "output_dir": str(tmp_path / "out2"), "cache_dir": str(tmp_path / "out" / "cache")}
        )
    )
    assert [p.stat().st_mtime_ns for p in cached] == stamps, "the second run reused the latent cache"
    from safetensors.torch import load_file

    a, b = load_file(str(first.lora_path)), load_file(str(second.lora_path))
    assert all(k.startswith("lora_unet") for k in a) and all((a[k] == b[k]).all() for k in a)
    samples = sorted((tmp_path / "out" / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step-00000002-00.png", "step-00000004-00.png"]
    assert any(e["event"] == "sample" for e in read_events(tmp_path / "out" / "events.jsonl"))
    assert list((tmp_path / "out" / "logs").glob("events.out.tfevents.*"))


def test_v_prediction_metadata(tiny_sd2, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_sd2, data, tmp_path / "out", max_train_steps=2, prediction_type="v_prediction")
    result = train(config_from_dict(cfg))
    _, meta = _shapes_and_meta(result.lora_path)
    assert meta["ss_base_model_version"] == "sd_v2_v" and meta["ss_v2"] == "True"
    assert meta["modelspec.prediction_type"] == "v"


def test_stop_file_saves_and_resumes(tiny_sd1, tmp_path: Path) -> None:
    from lorascripts.errors import StopRequested
    from lorascripts.run.events import STOP_FILE_NAME

    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_sd1, data, tmp_path / "out", max_train_steps=6)

    def on_event(event: dict) -> None:  # a host (or a person) drops a STOP file into the output folder
        if event["event"] == "step" and event["step"] == 2:
            (tmp_path / "out" / STOP_FILE_NAME).touch()

    with pytest.raises(StopRequested):
        train(config_from_dict(cfg), callbacks=[on_event])
    assert (tmp_path / "out" / "checkpoints" / "step-00000002").is_dir()
    result = train(config_from_dict({**cfg, "resume": "auto"}))
    assert result.steps == 6
    events = [e["event"] for e in read_events(tmp_path / "out" / "events.jsonl")]
    assert "stopped" in events and "resumed" in events


def test_target_modules_subset(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_sd1, data, tmp_path / "out", target_modules=["proj_in"], train_text_encoder=True)
    result = train(config_from_dict(cfg))
    shapes, _ = _shapes_and_meta(result.lora_path)
    assert shapes and all("proj_in" in k for k in shapes)
    with pytest.raises(ModelError, match="selects no layer"):
        train(
            config_from_dict(
                {
                    **cfg,
                    "output_dir": str(tmp_path / "o2"),
                    "target_modules": ["fc1"],
                    "train_text_encoder": False,
                }
            )
        )


def test_save_every_n_epochs_counts_completed_epochs(tiny_sd1, tmp_path: Path) -> None:
    """With one batch per epoch and save_every_n_epochs 2, the checkpoints are after epochs 2 and 4 (steps 2, 4),
    not after epochs 1 and 3; the last step (5) is the final save, not a periodic one."""
    data = make_dataset(tmp_path / "data", n=2)
    cfg = tiny_config(tiny_sd1, data, tmp_path / "out", max_train_steps=5, save_every_n_epochs=2)
    result = train(config_from_dict(cfg))
    saved = [e["step"] for e in read_events(result.output_dir / "events.jsonl") if e["event"] == "checkpoint"]
    assert saved == [2, 4]
