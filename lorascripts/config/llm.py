"""The text-LoRA config (`task: llm`): the shared keys of `RunConfig` (with the text defaults) and the text ones.

It lives in config/ (not llm/) so that the loader reaches it without importing the training code."""

from __future__ import annotations

from dataclasses import dataclass

from .base import RunConfig, task_default
from .fields import option

MODEL, DATA, NETWORK, TRAIN, SAVE = "LLM: model", "LLM: data", "LLM: LoRA", "LLM: training", "LLM: saving"


@dataclass(kw_only=True)  # the shared keys come first: every key is passed by name
class LLMConfig(RunConfig):
    """Everything one text-LoRA run needs (selected by `task: llm`)."""

    # the shared keys whose text default differs (RunConfig's help of each says why)
    task: str = task_default("task", "llm")
    lora_alpha: float = task_default("lora_alpha", 32.0)
    dropout: float = task_default("dropout", 0.05)
    batch_size: int = task_default("batch_size", 4)
    epochs: int = task_default("epochs", 3)
    learning_rate: float = task_default("learning_rate", 2e-4)
    weight_decay: float = task_default("weight_decay", 0.0)
    lr_scheduler: str = task_default("lr_scheduler", "cosine")
    output_dir: str = task_default("output_dir", "output/llm")
    keep_last_n: int = task_default("keep_last_n", 2)
    resume: str = task_default("resume", "auto")

    train_data: str = option(
        help="JSONL file: prompt/response, chat `messages`, or alpaca instruction/input/output lines "
        "(dpo/orpo: prompt/chosen/rejected pairs).",
        section=DATA,
        path=True,
        aliases=("dataset", "data_path"),
    )
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
    eval_every_n_steps: int = option(
        0, help="Eval loss every N steps (0: every epoch).", section=TRAIN, min=0
    )
    output_name: str = option("llm_lora", help="Adapter folder name inside output_dir.", section=SAVE)
    merge_full_model: bool = option(
        False, help="Also write base + adapter merged as a full model folder.", section=SAVE
    )
