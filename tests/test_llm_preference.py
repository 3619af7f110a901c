"""Preference tuning (`objective: dpo | orpo`) on tiny Llama/Qwen2 models: data shapes, the losses against trl's
on the same batch, and training that moves the chosen answer ahead of the rejected one."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_llm import assert_resume_matches_straight, build_tiny_lm, build_tokenizer, llm_config

from lorascripts.config import config_from_dict
from lorascripts.errors import ConfigError, DatasetError
from lorascripts.llm.data import chat_template
from lorascripts.llm.model import load_tokenizer
from lorascripts.llm.preference import attach_reference, orpo_losses, pair_loss
from lorascripts.llm.preference_data import PreferenceExample, encode_pair, read_preferences
from lorascripts.llm.train import train_llm

THINGS = ["lantern", "river", "bridge", "teapot", "boat", "willow"]
PREFS = [
    {"prompt": f"caption for the {t}", "chosen": f"{t} in mist, zk style", "rejected": f"a photo of a {t}"}
    for t in THINGS
] + [
    {"prompt": f"describe the {t}", "chosen": f"the {t} glows softly", "rejected": f"it is a {t} i think"}
    for t in THINGS
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    texts = [" ".join(p.values()) for p in PREFS] + ["user assistant system"] * 5
    return build_tokenizer(tmp_path_factory.mktemp("tok"), texts * 3)


@pytest.fixture(scope="module")
def prefs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PREFS), encoding="utf-8")
    return path


def _config(model: Path, data: Path, out: Path, **extra) -> object:  # noqa: ANN003
    settings = {"objective": "dpo", "lora_rank": 8, "lora_alpha": 16, "max_train_steps": 24, **extra}
    return llm_config(model, data, out, **settings)


def test_preference_lines_in_every_shape_and_bad_lines_by_number(tmp_path):
    user = {"role": "user", "content": "q"}
    lines = [
        {"prompt": "q", "chosen": "good", "rejected": "bad", "system": "s"},
        {"prompt": [user], "chosen": [{"role": "assistant", "content": "good"}], "rejected": "bad"},
        {"messages": [user], "chosen": "good", "rejected": "bad"},
        {
            "chosen": [user, {"role": "assistant", "content": "good"}],
            "rejected": [user, {"role": "assistant", "content": "bad"}],
        },
        {"prompt": "q", "response": "r"},  # an SFT line
        {"prompt": "q", "chosen": "", "rejected": "bad"},
        {
            "chosen": [user, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "x"}],
        },
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        read_preferences(path)
    text = str(info.value)
    assert "4 bad preference lines" in text
    assert "line 5: a preference line needs `chosen` and `rejected`" in text
    assert "line 6: `chosen` must be non-empty text" in text and "line 7: whole `chosen`/`rejected`" in text
    assert "line 8:" in text
    kept = read_preferences(path, on_error="skip")
    assert [p.line for p in kept] == [1, 2, 3, 4]
    assert kept[0].prompt == [{"role": "system", "content": "s"}, user]
    assert all((p.chosen, p.rejected) == ("good", "bad") and p.prompt[-1] == user for p in kept)


def test_the_config_names_the_objective_and_the_data_shape(tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match="objective"):
        config_from_dict({"task": "llm", "base_model": "x", "train_data": "y.jsonl", "objective": "ppo"})
    model = build_tiny_lm("qwen2", tmp_path / "m", tokenizer_dir)
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "q", "response": "r"}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="line 1: a preference line needs `chosen` and `rejected`"):
        train_llm(_config(model, sft, tmp_path / "out"))


def _peft(model_dir: Path) -> object:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
    )
    return get_peft_model(AutoModelForCausalLM.from_pretrained(str(model_dir)), lora).eval()


@pytest.fixture
def forget_trainer_state():
    """trl's trainers (through transformers' TrainingArguments) set accelerate's process-wide AcceleratorState;
    left behind, every later in-process training in this pytest run would fail to pick its own precision."""
    yield
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def test_dpo_and_orpo_losses_equal_trl_on_the_same_batch(tokenizer_dir, tmp_path, forget_trainer_state):
    pytest.importorskip("trl", reason="trl is in requirements-dev.txt; the comparison needs it")
    from trl import DPOConfig, DPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    from datasets import Dataset

    model_dir = build_tiny_lm("llama", tmp_path / "m", tokenizer_dir)
    tokenizer = load_tokenizer(str(model_dir))
    model = _peft(model_dir)
    examples = [
        PreferenceExample([{"role": "user", "content": p["prompt"]}], p["chosen"], p["rejected"], i)
        for i, p in enumerate(PREFS[:3])
    ]
    conversational = [
        {
            "prompt": e.prompt,
            "chosen": [{"role": "assistant", "content": e.chosen}],
            "rejected": [{"role": "assistant", "content": e.rejected}],
        }
        for e in examples
    ]
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, report_to=[], use_cpu=True, max_length=None)
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(conversational), processing_class=tokenizer
    )
    if (
        "ref" in model.peft_config
    ):  # trl keeps a copy of a passed-in adapter as its reference; ours is the base
        model.delete_adapter("ref")
    rows = [trainer.train_dataset[i] for i in range(3)]
    with torch.no_grad():
        trl_dpo = float(trainer.compute_loss(model, trainer.data_collator(rows)))

    pairs = [encode_pair(e, tokenizer, 256, chat_template(tokenizer))[0] for e in examples]
    for pair, row in zip(pairs, rows):  # the same tokens as trl's pipeline
        assert pair.chosen.input_ids == row["prompt_ids"] + row["chosen_ids"]
        assert pair.rejected.input_ids == row["prompt_ids"] + row["rejected_ids"]
    pad = tokenizer.pad_token_id
    attach_reference(model, pairs, pad, 2, None)
    with torch.no_grad():
        ours, metrics = pair_loss(model, pairs, "dpo", 0.1, pad)
    assert float(ours) / 3 == pytest.approx(trl_dpo, rel=1e-5, abs=1e-6)
    assert abs(trl_dpo - 0.6931) > 0.01  # the policy differs from the reference: not a trivial ln 2

    avg = torch.tensor([[-0.3, -1.7], [-2.5, -0.9], [-0.05, -0.2]])
    shim = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device="cpu"))
    trl_terms = ORPOTrainer.odds_ratio_loss(shim, avg[:, 0], avg[:, 1])[0]
    assert torch.allclose(orpo_losses(avg[:, 0], avg[:, 1], 0.1), -trl_terms, atol=1e-6)
    assert 0 <= metrics["accuracy"] <= 1


def test_packed_pairs_give_the_same_log_probs(tokenizer_dir, tmp_path):
    from lorascripts.llm.batches import sequence_logps
    from lorascripts.llm.preference import _pair_batch

    model_dir = build_tiny_lm("qwen2", tmp_path / "m", tokenizer_dir)
    tokenizer = load_tokenizer(str(model_dir))
    model = _peft(model_dir)
    long = " ".join(p["chosen"] for p in PREFS[:5])
    examples = [
        PreferenceExample([{"role": "user", "content": "q"}], long, "no", 1),
        PreferenceExample([{"role": "user", "content": PREFS[1]["prompt"]}], "yes", PREFS[2]["chosen"], 2),
        PreferenceExample([{"role": "user", "content": "r"}], PREFS[3]["rejected"], "ok", 3),
    ]
    pairs = [encode_pair(e, tokenizer, 256, chat_template(tokenizer))[0] for e in examples]
    packed, segments = _pair_batch(pairs, tokenizer.pad_token_id, torch.device("cpu"), True)
    single, _ = _pair_batch(pairs, tokenizer.pad_token_id, torch.device("cpu"), False)
    assert packed["input_ids"].shape[0] < single["input_ids"].shape[0] == 6  # something shares a row
    with torch.no_grad():
        a_sums, a_counts = sequence_logps(model, packed, segments)
        b_sums, b_counts = sequence_logps(model, single)
    assert torch.equal(a_counts, b_counts) and torch.allclose(a_sums, b_sums, atol=1e-4)


def _margins(events: list[dict]) -> list[float]:
    return [e["margin"] for e in events if e["event"] == "step"]


@pytest.mark.parametrize(("arch", "objective"), [("llama", "dpo"), ("qwen2", "orpo")])
def test_training_moves_the_chosen_answer_ahead(arch, objective, tokenizer_dir, prefs_file, tmp_path):
    model_dir = build_tiny_lm(arch, tmp_path / arch, tokenizer_dir)
    events: list[dict] = []
    cfg = _config(
        model_dir, prefs_file, tmp_path / "out", objective=objective, eval_split=0.2, eval_every_n_steps=12
    )
    result = train_llm(cfg, callbacks=[events.append])
    margins = _margins(events)
    assert margins[-1] > margins[0] + 5, margins  # summed log-prob of chosen minus rejected
    assert [e for e in events if e["event"] == "step"][-1]["accuracy"] == 1.0
    evals = [e for e in events if e["event"] == "eval"]
    assert len(evals) == 2 and evals[1]["eval_margin"] > evals[0]["eval_margin"] - 1e-6
    assert result.serving["ok"] and (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_dpo_stop_then_resume_ends_with_the_same_adapter(tokenizer_dir, prefs_file, tmp_path):
    model_dir = build_tiny_lm("llama", tmp_path / "llama", tokenizer_dir)
    assert_resume_matches_straight(
        _config(model_dir, prefs_file, tmp_path / "a", max_train_steps=10),
        _config(model_dir, prefs_file, tmp_path / "b", max_train_steps=10),
        stop_at=4,
    )
