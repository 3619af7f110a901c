"""Tiny causal LMs for the text-LoRA tests: Llama and Qwen2 architectures from configs, with a byte-level BPE
tokenizer trained locally on the test texts and a ChatML chat template (no downloads)."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(folder: Path, texts: list[str], vocab_size: int = 400) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHATML
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return folder


def build_tiny_lm(arch: str, folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A 2-layer model of the given architecture saved with its tokenizer (a folder users could point at)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.3,  # random logits wide enough that a LoRA can make one token win clearly
    )
    torch.manual_seed(seed)
    model = (
        LlamaForCausalLM(LlamaConfig(**common))
        if arch == "llama"
        else Qwen2ForCausalLM(Qwen2Config(**common))
    )
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def assert_resume_matches_straight(straight_cfg: object, cfg: object, stop_at: int) -> None:
    """Train `straight_cfg` in one go; train `cfg` (same settings, another output_dir), stop it after step
    `stop_at` and run it again: it must resume there and end with the same adapter."""
    import pytest
    import torch
    from safetensors.torch import load_file

    from lorascripts.errors import StopRequested
    from lorascripts.llm.train import train_llm
    from lorascripts.run.events import StopControl

    straight = train_llm(straight_cfg)
    stop = StopControl(Path(cfg.output_dir))

    def stop_there(event: dict) -> None:
        if event["event"] == "step" and event["step"] == stop_at:
            stop.request("test")

    with pytest.raises(StopRequested):
        train_llm(cfg, callbacks=[stop_there], stop=stop)
    events: list[dict] = []
    resumed = train_llm(cfg, callbacks=[events.append])
    assert events[0]["event"] == "resumed" and events[0]["step"] == stop_at
    a = load_file(str(straight.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def llm_config(model: Path, data: Path, out: Path, **extra) -> object:  # noqa: ANN003
    """A text-LoRA config for the tiny models: memorising settings (high rate, no dropout, fp32)."""
    from lorascripts.config import config_from_dict

    raw = {
        "task": "llm",
        "base_model": str(model),
        "train_data": str(data),
        "output_dir": str(out),
        "output_name": "voice",
        "lora_rank": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "learning_rate": 5e-3,
        "lr_scheduler": "constant",
        "batch_size": 4,
        "max_train_steps": 150,
        "eval_split": 0,
        "max_seq_length": 64,
        "mixed_precision": "no",
        "logging": False,
        "seed": 1,
        **extra,
    }
    return config_from_dict(raw)
