"""Host training jobs (used by the ComfyUI nodes and the WebUI tab): child process, events, reuse, cancel,
failures with their cause; and the WebUI prompt-tag syntax."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_train import make_dataset, tiny_config

from lorascripts.errors import StopRequested, TrainingError
from lorascripts.host.jobs import TrainingJob
from lorascripts.host.prompt_tags import LoraTag, parse_prompt_tags


def test_job_trains_reuses_and_retrains(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    config = tiny_config(tiny_sd1, data, tmp_path / "unused", max_train_steps=3)
    events: list[dict] = []
    job = TrainingJob(config, tmp_path / "work", tmp_path / "loras", "mine")
    result = job.run(on_event=events.append)
    assert result.lora_path == tmp_path / "loras" / "mine.safetensors" and result.lora_path.is_file()
    assert (tmp_path / "loras" / "mine.json").is_file() and not result.reused
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]
    again = TrainingJob(config, tmp_path / "work", tmp_path / "loras", "mine").run()
    assert again.reused and again.lora_path == result.lora_path
    (data / "img_00.png").write_bytes((data / "img_01.png").read_bytes())  # the data changed
    changed = TrainingJob(config, tmp_path / "work", tmp_path / "loras", "mine")
    assert changed.fingerprint != job.fingerprint
    assert not changed.run().reused


def test_job_failure_carries_the_cause(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2)
    (data / "img_01.png").write_bytes(b"\\x89PNG broken")
    job = TrainingJob(
        tiny_config(tiny_sd1, data, tmp_path / "x"), tmp_path / "work", tmp_path / "loras", "bad"
    )
    with pytest.raises(TrainingError) as err:
        job.run()
    assert "exit code 3" in str(err.value) and "img_01.png" in str(err.value)
    assert not (tmp_path / "loras" / "bad.safetensors").exists()


def test_job_cancel_keeps_a_checkpoint_and_resumes(tiny_sd1, tmp_path: Path) -> None:
    """Cancel pressed at once, while the child is still starting: the STOP file is there before the child's CLI
    runs, which must keep it (it used to remove it as left from an earlier run, and the run trained to its end);
    the run stops after its first step with a checkpoint, and the same job resumes from it. (Cancel after a step:
    tests/test_comfyui.py.)"""
    data = make_dataset(tmp_path / "data", n=2)
    config = tiny_config(tiny_sd1, data, tmp_path / "x", max_train_steps=8)
    job = TrainingJob(config, tmp_path / "work", tmp_path / "loras", "c")
    with pytest.raises(StopRequested):
        job.run(should_cancel=lambda: True)
    assert [e["step"] for e in job.events if e["event"] == "step"] == [1]
    checkpoints = sorted(p.name for p in (tmp_path / "work" / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-00000001"] and not (tmp_path / "loras" / "c.safetensors").exists()
    resumed = TrainingJob(config, tmp_path / "work", tmp_path / "loras", "c")
    result = resumed.run()
    assert result.lora_path.is_file()
    assert [e["step"] for e in resumed.events if e["event"] == "resumed"] == [1]
    assert [e["step"] for e in resumed.events if e["event"] == "step"] == list(range(2, 9))


def test_prompt_tags_follow_the_webui() -> None:
    clean, tags = parse_prompt_tags(
        "a cat <lora:style:0.7>, sitting <lora:char:0.5:0.9> <lora:x> <lora:y:1:te=0.2>"
    )
    assert clean == "a cat, sitting"
    assert tags == [
        LoraTag("style", 0.7, 0.7),
        LoraTag("char", 0.5, 0.9),
        LoraTag("x", 1.0, 1.0),
        LoraTag("y", 0.2, 1.0),
    ]
    with pytest.raises(ValueError, match="not a number"):
        parse_prompt_tags("<lora:z:strong>")
