"""The text-LoRA config (`task: llm`): one typed object, validated by the same machinery as the image config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config.fields import option
from ..config.schema import CONFIG_VERSION

MODEL, DATA, NETWORK, TRAIN, SAVE = "LLM: model", "LLM: data", "LLM: LoRA", "LLM: training", "LLM: saving"


@dataclass
class LLMConfig:
    """Everything one text-LoRA run needs (selected by `task: llm`)."""

    base_model: str = option(
        help="Causal LM: a Hugging Face id (downloaded on first use) or a local folder (Llama, Qwen2, ...).",
        section=MODEL,
        aliases=("model", "model_name_or_path"),
    )
    train_data: str = option(
        help="JSONL file: prompt/response, chat `messages`, or alpaca instruction/input/output lines "
        "(dpo/orpo: prompt/chosen/rejected pairs).",
        section=DATA,
        path=True,
        aliases=("dataset", "data_path"),
    )
    task: str = option("llm", help="`llm` for this config.", section=MODEL, choices=("image", "llm"))
    config_version: int = option(CONFIG_VERSION, help="Config format version.", section=MODEL, min=1)
    allow_remote_code: bool = option(
        False,
        help="Run the model repository's own Python code (trust_remote_code). Off by default.",
        section=MODEL,
    )
    load_in_4bit: bool = option(
        False, help="QLoRA: load the base in 4 bit (needs CUDA and bitsandbytes).", section=MODEL
    )
    eval_data: str | None = option(
        None, help="Separate JSONL for evaluation (else eval_split).", section=DATA, path=True
    )
    eval_split: float = option(
        0.1, help="Fraction of train_data held out for eval loss (0: none).", section=DATA, min=0, max=0.5
    )
    chat_template: str | None = option(
        None,
        help="chatml or plain; empty: the tokenizer's own template (ChatML when it has none).",
        section=DATA,
        choices=(None, "chatml", "plain"),
    )
    train_on_prompt: bool = option(
        False, help="Also learn the prompt tokens (default: response only).", section=DATA
    )
    max_seq_length: int = option(
        1024, help="Tokens per sample; longer samples are cut (with a warning).", section=DATA, min=8
    )
    packing: bool = option(
        True, help="Pack short samples into one row (attention stays inside each sample).", section=DATA
    )
    on_bad_line: str = option(
        "error",
        help="error: stop and list bad JSONL lines; skip: warn and go on.",
        section=DATA,
        choices=("error", "skip"),
    )
    lora_rank: int = option(16, help="LoRA r.", section=NETWORK, min=1, aliases=("r", "lora_r"))
    lora_alpha: float = option(
        32,
        help="LoRA alpha (update scaled by alpha/r, or alpha/sqrt(r) with rsLoRA).",
        section=NETWORK,
        min=0,
    )
    lora_dropout: float = option(0.05, help="Dropout on the LoRA path.", section=NETWORK, min=0, max=0.9)
    target_modules: list[str] = option(
        help="Module names (q_proj, v_proj, ...) or all-linear.",
        section=NETWORK,
        default_factory=lambda: ["all-linear"],
    )
    use_rslora: bool = option(False, help="Rank-stabilised scaling alpha/sqrt(r).", section=NETWORK)
    use_dora: bool = option(False, help="DoRA (weight-decomposed LoRA).", section=NETWORK)
    init_adapter: str | None = option(
        None, help="Continue training this adapter folder (incremental).", section=NETWORK, path=True
    )
    objective: str = option(
        "sft",
        help="sft: learn the responses; dpo: prefer `chosen` over `rejected` against the frozen base; "
        "orpo: reference-free preference (NLL on chosen + odds ratio).",
        section=TRAIN,
        choices=("sft", "dpo", "orpo"),
    )
    preference_beta: float = option(
        0.1,
        help="dpo/orpo strength (beta): how far the answers' log-probabilities move apart.",
        section=TRAIN,
        min=0,
    )
    learning_rate: float = option(2e-4, help="Peak learning rate.", section=TRAIN, min=0)
    lr_scheduler: str = option(
        "cosine",
        help="constant, linear or cosine (after warmup).",
        section=TRAIN,
        choices=("constant", "linear", "cosine"),
    )
    warmup_steps: int = option(0, help="Linear warmup steps.", section=TRAIN, min=0)
    weight_decay: float = option(0.0, help="AdamW weight decay.", section=TRAIN, min=0)
    epochs: int = option(3, help="Passes over the data (when max_train_steps is 0).", section=TRAIN, min=1)
    max_train_steps: int = option(0, help="Optimizer steps (0: from epochs).", section=TRAIN, min=0)
    batch_size: int = option(4, help="Rows per step (packed rows or samples).", section=TRAIN, min=1)
    gradient_accumulation_steps: int = option(
        1, help="Micro-batches per optimizer step.", section=TRAIN, min=1
    )
    max_grad_norm: float = option(1.0, help="Gradient clipping (0: off).", section=TRAIN, min=0)
    mixed_precision: str = option(
        "auto",
        help="auto (bf16 where fast), no, bf16 or fp16 (GPU only).",
        section=TRAIN,
        choices=("auto", "no", "bf16", "fp16"),
    )
    gradient_checkpointing: bool = option(False, help="Trade compute for memory.", section=TRAIN)
    seed: int = option(42, help="Random seed.", section=TRAIN)
    eval_every_n_steps: int = option(
        0, help="Eval loss every N steps (0: every epoch).", section=TRAIN, min=0
    )
    early_stopping_patience: int = option(
        0, help="Stop after N evals without improvement; keeps the best (0: off).", section=TRAIN, min=0
    )
    output_dir: str = option(
        "output/llm", help="Where the adapter, checkpoints and logs go.", section=SAVE, path=True
    )
    output_name: str = option("llm_lora", help="Adapter folder name inside output_dir.", section=SAVE)
    save_steps: int = option(0, help="Checkpoint every N steps (0: only at the end).", section=SAVE, min=0)
    keep_last_n: int = option(2, help="Checkpoints kept.", section=SAVE, min=1)
    resume: str = option(
        "auto", help="auto: continue from the last checkpoint; none; or a checkpoint folder.", section=SAVE
    )
    merge_full_model: bool = option(
        False, help="Also write base + adapter merged as a full model folder.", section=SAVE
    )
    log_every_n_steps: int = option(1, help="Loss report interval.", section=SAVE, min=1)
    logging: bool = option(True, help="TensorBoard logs in <output_dir>/logs.", section=SAVE)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
