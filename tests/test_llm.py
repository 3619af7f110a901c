"""Text LoRA (`task: llm`) on tiny Llama and Qwen2 models built from configs, tokenizer trained here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from comfy_host import REPO
from tiny_llm import assert_resume_matches_straight, build_tiny_lm, build_tokenizer, llm_config

from lorascripts.config import config_from_dict
from lorascripts.errors import ConfigError, DatasetError
from lorascripts.host.children import generate_in_child
from lorascripts.llm.batches import as_rows, collate, token_loss
from lorascripts.llm.data import IGNORE, Example, encode, read_jsonl
from lorascripts.llm.generate import generate_text
from lorascripts.llm.model import load_for_generation, load_tokenizer
from lorascripts.llm.train import train_llm

COLOURS = ["red", "blue", "green", "amber", "violet"]
THINGS = ["lantern", "river", "bridge", "teapot"]
PAIRS = [
    (f"describe the {c} {t}", f"the {c} {t} glows softly by the water town")
    if i % 2
    else (f"caption for {c} {t}", f"{t} in {c}, misty canal, zk style")
    for i, (c, t) in enumerate((c, t) for c in COLOURS for t in THINGS)
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    texts = [f"{p} {r}" for p, r in PAIRS] + ["user assistant system"] * 5
    return build_tokenizer(tmp_path_factory.mktemp("llm_tok"), texts * 3)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llm_data") / "pairs.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS), encoding="utf-8"
    )
    return path


def _config(model: Path, data: Path, out: Path, **extra) -> object:  # noqa: ANN003
    return llm_config(model, data, out, **extra)


def test_jsonl_formats_and_bad_lines_by_number(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        {"prompt": "a", "response": "b"},
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ]
        },
        "{not json",
        {"instruction": "a", "input": "ctx", "output": "b"},
        {"question": "a", "answer": "b"},
        {"messages": [{"role": "user", "content": "a"}]},
        {"prompt": "a", "response": ""},
    ]
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8"
    )
    with pytest.raises(DatasetError) as err:
        read_jsonl(path)
    text = str(err.value)
    assert "4 bad lines" in text
    for n in (3, 5, 6, 7):
        assert f"line {n}:" in text
    assert (
        "unknown line shape (keys: ['answer', 'question'])" in text
        and "last message must be the assistant" in text
    )
    kept = read_jsonl(path, on_error="skip")
    assert [e.line for e in kept] == [1, 2, 4]
    assert kept[2].messages[0]["content"] == "a\n\nctx" and kept[1].messages[0]["role"] == "system"


# put before a working template: refuses a system turn as Gemma's and Mistral's templates do
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}{% endfor %}"
)


def test_jsonl_lines_parsers_and_tokenizers_choke_on_are_named(tokenizer_dir, tmp_path):
    path = tmp_path / "odd.jsonl"
    lines = [
        '{"prompt": "a", "response": "b"}',
        "[" * 100_000 + "]" * 100_000,  # RecursionError in json.loads
        '{"prompt": "a \\ud800 b", "response": "c"}',  # a lone surrogate: no tokenizer can encode it
        '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "\\udfff"}]}',
        '{"system": "be brief", "prompt": "a", "response": "b"}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        read_jsonl(path)
    text = str(err.value)
    assert str(path) in text and "3 bad lines" in text
    assert "line 2: JSON nested too deeply" in text
    assert "line 3: user holds a lone surrogate escape ('\\ud800' at character 3)" in text
    assert "line 4: assistant holds a lone surrogate" in text
    kept = read_jsonl(path, on_error="skip")
    assert [e.line for e in kept] == [1, 5]
    tokenizer = load_tokenizer(str(tokenizer_dir))
    no_system = NO_SYSTEM + tokenizer.chat_template
    assert encode(kept[0], tokenizer, 64, no_system).input_ids
    with pytest.raises(
        DatasetError,
        match=rf"{path}, line 5: the chat template refused this conversation "
        r"\(system/user\): System role not supported\. .*drop the system message",
    ):
        encode(kept[1], tokenizer, 64, no_system)


def test_prompt_tokens_are_masked(tokenizer_dir):
    tokenizer = load_tokenizer(str(tokenizer_dir))
    example = Example(
        [{"role": "user", "content": PAIRS[0][0]}, {"role": "assistant", "content": PAIRS[0][1]}], 1
    )
    enc = encode(example, tokenizer, 128, tokenizer.chat_template)
    learned = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE]
    assert enc.labels[: len(enc.labels) - len(learned)] == [IGNORE] * (len(enc.labels) - len(learned))
    assert tokenizer.decode(learned).startswith(PAIRS[0][1] + "<|im_end|>")
    assert PAIRS[0][0] not in tokenizer.decode(learned)
    everything = encode(example, tokenizer, 128, tokenizer.chat_template, train_on_prompt=True)
    assert IGNORE not in everything.labels
    short = encode(example, tokenizer, 8, tokenizer.chat_template)
    assert short.truncated and len(short.input_ids) == 8


def test_packing_gives_the_same_per_sample_loss(tokenizer_dir, tmp_path):
    model_dir = build_tiny_lm("llama", tmp_path / "llama", tokenizer_dir)
    model, tokenizer = load_for_generation(str(model_dir), None)
    convos = [(p, r) for p, r in PAIRS[:6]] + [
        (PAIRS[6][0], " ".join(r for _, r in PAIRS[:4]))
    ]  # one long one
    samples = [
        encode(
            Example([{"role": "user", "content": p}, {"role": "assistant", "content": r}], i),
            tokenizer,
            256,
            tokenizer.chat_template,
        )
        for i, (p, r) in enumerate(convos)
    ]
    with torch.no_grad():
        single = sum(
            float(token_loss(model, collate([row], tokenizer.pad_token_id))[0])
            for row in as_rows(samples, 64, False)
        )
        rows = as_rows(samples, 256, True)  # rows as long as the longest sample; the short ones share rows
        assert len(rows) < len(samples)  # something was actually packed
        packed = sum(float(token_loss(model, collate(rows, tokenizer.pad_token_id))[0]) for _ in [0])
    assert abs(single - packed) < 1e-3 * abs(single)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_learns_every_response_then_reloads_and_merges(arch, tokenizer_dir, data_file, tmp_path):
    model_dir = build_tiny_lm(arch, tmp_path / arch, tokenizer_dir)
    events = []
    result = train_llm(
        _config(model_dir, data_file, tmp_path / "out", merge_full_model=True), callbacks=[events.append]
    )
    assert (result.adapter_dir / "adapter_model.safetensors").is_file() and (
        result.adapter_dir / "adapter_config.json"
    ).is_file()
    assert (result.adapter_dir / "lorascripts_config.yaml").is_file()
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert losses[-1] < losses[0] * 0.1
    model, tokenizer = load_for_generation(str(model_dir), str(result.adapter_dir))  # the adapter reloads
    for prompt, response in PAIRS:
        assert generate_text(model, tokenizer, prompt, max_new_tokens=32) == response, prompt
    merged, _ = load_for_generation(str(result.merged_dir), None)
    ids = tokenizer("describe the red river", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, model(ids).logits, atol=1e-4)


def test_stop_then_resume_ends_with_the_same_adapter(tokenizer_dir, data_file, tmp_path):
    model_dir = build_tiny_lm("llama", tmp_path / "llama", tokenizer_dir)
    assert_resume_matches_straight(
        _config(model_dir, data_file, tmp_path / "a", max_train_steps=20),
        _config(model_dir, data_file, tmp_path / "b", max_train_steps=20),
        stop_at=8,
    )


def test_eval_split_and_early_stopping(tokenizer_dir, data_file, tmp_path):
    model_dir = build_tiny_lm("qwen2", tmp_path / "qwen2", tokenizer_dir)
    events = []
    cfg = _config(
        model_dir,
        data_file,
        tmp_path / "out",
        eval_split=0.2,
        eval_every_n_steps=5,
        early_stopping_patience=2,
        max_train_steps=400,
        learning_rate=3e-2,
    )
    result = train_llm(cfg, callbacks=[events.append])
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and all(e["eval_loss"] is not None for e in evals)
    stopped = [e for e in events if e["event"] == "early_stop"]
    assert stopped and result.steps < 400  # memorising 16 pairs cannot help the 4 held out for long
    assert result.eval_loss == min(e["eval_loss"] for e in evals)


def test_config_and_cli(tokenizer_dir, data_file, tmp_path):
    with pytest.raises(ConfigError, match="lora_rank"):
        config_from_dict({"task": "llm", "base_model": "x", "train_data": str(data_file), "lora_rnak": 4})
    model_dir = build_tiny_lm("llama", tmp_path / "llama", tokenizer_dir)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA GPU and the bitsandbytes"):
            train_llm(_config(model_dir, data_file, tmp_path / "q", load_in_4bit=True))
    config = tmp_path / "llm.yaml"
    config.write_text(
        "\n".join(
            f"{k}: {json.dumps(v)}"
            for k, v in _config(model_dir, data_file, tmp_path / "cli").to_dict().items()
        ),
        encoding="utf-8",
    )
    subprocess.run(
        [sys.executable, "train.py", "--config", str(config)], cwd=str(REPO), check=True, capture_output=True
    )
    umask = os.umask(0)
    os.umask(umask)
    adapter = sorted((tmp_path / "cli" / "voice").iterdir())
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in adapter} == {
        f.name: oct(0o666 & ~umask) for f in adapter
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lorascripts",
            "generate",
            "--base",
            str(model_dir),
            "--lora",
            str(tmp_path / "cli" / "voice"),
            PAIRS[3][0],
        ],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == PAIRS[3][1]


def test_dora_rslora_and_incremental_training(tokenizer_dir, data_file, tmp_path):
    model_dir = build_tiny_lm("qwen2", tmp_path / "qwen2", tokenizer_dir)
    first = train_llm(
        _config(model_dir, data_file, tmp_path / "a", max_train_steps=40, use_dora=True, use_rslora=True)
    )
    adapter = json.loads((first.adapter_dir / "adapter_config.json").read_text())
    assert adapter["use_dora"] is True and adapter["use_rslora"] is True and adapter["r"] == 16
    events = []
    more = train_llm(
        _config(
            model_dir, data_file, tmp_path / "b", max_train_steps=40, init_adapter=str(first.adapter_dir)
        ),
        callbacks=[events.append],
    )
    losses = [e["loss"] for e in events if e["event"] == "step"]
    fresh = []
    train_llm(_config(model_dir, data_file, tmp_path / "c", max_train_steps=1), callbacks=[fresh.append])
    assert (
        losses[0] < [e["loss"] for e in fresh if e["event"] == "step"][0]
    )  # it started from the trained adapter
    assert json.loads((more.adapter_dir / "adapter_config.json").read_text())["use_dora"] is True


def test_generation_and_adapters_refused_by_the_libraries_are_named(tokenizer_dir, data_file, tmp_path):
    """Two inputs that reached "a bug in lora-scripts": a system prompt for a template without a system role,
    and an adapter folder that peft cannot load (damaged weights, or one of another base)."""
    from lorascripts.errors import ModelError

    model_dir = build_tiny_lm("llama", tmp_path / "llama", tokenizer_dir)
    model, tokenizer = load_for_generation(str(model_dir), None)
    with pytest.raises(ConfigError, match=r"refused this prompt \(system/user\).*Leave --system empty"):
        tokenizer.chat_template = (
            NO_SYSTEM + tokenizer.chat_template
        )  # a model whose template has no system role
        generate_text(model, tokenizer, "hi", system="be brief")
    adapter = train_llm(_config(model_dir, data_file, tmp_path / "a", max_train_steps=1)).adapter_dir
    # the same text from a child of the engine's Python (how hosts with an engine environment generate)
    here = generate_text(*load_for_generation(str(model_dir), str(adapter)), "-a prompt with a dash", seed=3)
    os.environ["LORA_SCRIPTS_ENGINE_PYTHON"] = sys.executable
    try:
        there = generate_in_child(str(model_dir), str(adapter), "-a prompt with a dash", seed=3, system="")
    finally:
        del os.environ["LORA_SCRIPTS_ENGINE_PYTHON"]
    assert there == here
    (adapter / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match=rf"`--lora` {adapter} could not be loaded as an adapter"):
        load_for_generation(str(model_dir), str(adapter))
    with pytest.raises(ModelError, match=rf"`init_adapter` {adapter} could not be loaded"):
        train_llm(_config(model_dir, data_file, tmp_path / "b", max_train_steps=1, init_adapter=str(adapter)))
