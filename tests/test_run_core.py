"""The run core shared by image and text training: self-validating configs on a shared base, the old text
spellings, the optimizer registry (both trainers, the estimate) and the typed event schema."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers_train import make_dataset, tiny_config
from tiny_llm import build_tiny_lm, build_tokenizer, llm_config

from lorascripts.config import TrainConfig, config_from_dict, load_config
from lorascripts.config.base import RunConfig
from lorascripts.config.llm import LLMConfig
from lorascripts.errors import ConfigError
from lorascripts.run.event_types import EVENT_TYPES, event_problems
from lorascripts.run.events import read_events
from lorascripts.run.optimizers import OPTIMIZERS, optimizer_class, state_bytes_per_param

REPO = Path(__file__).resolve().parents[1]
IMAGE = {"base_model": "toy", "train_data_dir": "."}
TEXT = {"task": "llm", "base_model": "some/model", "train_data": "data.jsonl"}


def _refusal(build) -> str:  # noqa: ANN001
    with pytest.raises(ConfigError) as info:
        build()
    return str(info.value)


@pytest.mark.parametrize(
    "cls, raw, bad",
    [
        (TrainConfig, IMAGE, {"lora_rank": 0}),
        (TrainConfig, IMAGE, {"seed": -1}),
        (TrainConfig, IMAGE, {"flip_aug": True, "cache_latents": "memory"}),  # a cross-key rule
        (TrainConfig, IMAGE, {"optimizer_args": {"betaz": 0.9}}),  # the optimizer probe
        (LLMConfig, TEXT, {"lora_rank": 0}),
        (LLMConfig, TEXT, {"eval_split": 0.9}),
        (LLMConfig, TEXT, {"optimizer": "sgd"}),
        (LLMConfig, TEXT, {"optimizer_args": {"betas": []}}),
    ],
)
def test_config_objects_refuse_what_the_loader_refuses_in_the_same_words(cls, raw, bad):
    from_python = _refusal(lambda: cls(**{k: v for k, v in raw.items() if k != "task"}, **bad))
    from_yaml = _refusal(lambda: config_from_dict({**raw, **bad}, source="my.yaml"))
    assert from_yaml == f"my.yaml: {from_python}"
    good = cls(**{k: v for k, v in raw.items() if k != "task"})
    assert _refusal(lambda: dataclasses.replace(good, **bad)) == from_python


def test_both_configs_share_one_base_with_one_unset_spelling():
    shared = {f.name for f in dataclasses.fields(RunConfig)}
    assert {"learning_rate", "lr_warmup_steps", "max_train_steps", "save_steps", "optimizer"} <= shared
    for cls in (TrainConfig, LLMConfig):
        assert issubclass(cls, RunConfig)
        types_ = {f.name: f.type for f in dataclasses.fields(cls)}
        assert types_["max_train_steps"] == types_["save_steps"] == "int | None"
    # the old text spellings still load: warmup_steps, 0 for "unset", lora_dropout
    old = config_from_dict(
        {**TEXT, "warmup_steps": 5, "max_train_steps": 0, "save_steps": 0, "lora_dropout": 0.1}
    )
    assert (old.lr_warmup_steps, old.max_train_steps, old.save_steps, old.dropout) == (5, None, None, 0.1)
    image = config_from_dict({**IMAGE, "max_train_steps": 0, "warmup_steps": 0.1})
    assert image.max_train_steps is None and image.lr_warmup_steps == 0.1
    # where the defaults differ, the text config says so on the same field
    assert LLMConfig(base_model="m", train_data="d").resume == "auto"
    assert TrainConfig(base_model="m", train_data_dir="d").resume == "none"


def test_every_shipped_config_loads_unchanged():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert isinstance(cfg, (TrainConfig, LLMConfig)), path


def test_optimizer_registry_feeds_the_config_and_the_estimate():
    from lorascripts.perf.estimate import estimate_run

    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(RunConfig)}["optimizer"]
    assert choices == tuple(OPTIMIZERS)
    assert state_bytes_per_param("adamw") == 8 and state_bytes_per_param("prodigy") == 16
    assert optimizer_class("adamw").__name__ == "AdamW"

    def training_bytes(name: str) -> int:
        cfg = config_from_dict({**IMAGE, "optimizer": name})
        estimate = estimate_run(cfg, device="cpu", memory_limit_bytes=2**40, base_rss_bytes=0)
        return estimate.training_memory_bytes

    adamw, adafactor, prodigy = (training_bytes(n) for n in ("adamw", "adafactor", "prodigy"))
    # 8 vs 4 vs 16 bytes of state per LoRA parameter: prodigy adds twice what adafactor saves
    assert adamw > adafactor and prodigy - adamw == pytest.approx(2 * (adamw - adafactor), abs=8)


def test_schema_knows_every_kind_and_catches_a_renamed_field():
    step = {"event": "step", "time": 1.0, "step": 1, "total_steps": 4, "epoch": 0, "loss": 0.5}
    step |= {"lr": 1e-4, "it_per_s": 2.0, "eta_s": None}
    assert event_problems(step) == []
    renamed = {**{k: v for k, v in step.items() if k != "total_steps"}, "total": 4}
    assert event_problems(renamed) == ["step: missing `total_steps`"]
    assert event_problems({"event": "finished", "steps": 1, "loss": 0.1, "lora": 3}) != []
    assert "started" in EVENT_TYPES and "early_stop" in EVENT_TYPES


def test_image_run_events_fit_the_schema(tiny_sd1, tmp_path):
    from lorascripts.train.trainer import train

    data = make_dataset(tmp_path / "data", n=6)
    raw = tiny_config(tiny_sd1, data, tmp_path / "out", max_train_steps=4, save_steps=2)
    raw |= {"validation_split": 2, "validate_every_n_steps": 2, "optimizer": "adafactor"}
    train(config_from_dict(raw))
    events = read_events(tmp_path / "out" / "events.jsonl")
    kinds = {e["event"] for e in events}
    assert {"started", "step", "validation", "checkpoint", "finished"} <= kinds
    assert [p for e in events for p in event_problems(e)] == []


def test_text_run_uses_the_registry_and_its_events_fit_the_schema(tmp_path):
    from safetensors.torch import load_file

    from lorascripts.llm.train import train_llm

    texts = [f"say {w} and {w} again" for w in ("red", "blue", "green", "amber")]
    tok = build_tokenizer(tmp_path / "tok", texts * 5, vocab_size=120)
    model = build_tiny_lm("llama", tmp_path / "lm", tok)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": t, "response": t[::-1]}) + "\n" for t in texts * 3))
    out = tmp_path / "out"
    cfg = llm_config(model, data, out, max_train_steps=4, save_steps=2, eval_split=0.25)
    cfg = dataclasses.replace(cfg, optimizer="adafactor", eval_every_n_steps=2, keep_last_n=0)
    train_llm(cfg)
    events = read_events(out / "events.jsonl")
    assert {"started", "step", "eval", "checkpoint", "finished"} <= {e["event"] for e in events}
    assert [p for e in events for p in event_problems(e)] == []
    # Adafactor (factored second moment `exp_avg_sq_row`), not the AdamW text training hard-coded before
    state = load_file(str(out / "checkpoints" / "step-00000002" / "optimizer.safetensors"))
    assert any(k.endswith("exp_avg_sq_row") for k in state) and not any(k.endswith("exp_avg") for k in state)
