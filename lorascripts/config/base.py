"""The keys every run has, image or text LoRA: one name, one "unset" spelling and one default each.

`TrainConfig` (image) and `LLMConfig` (text, llm/config.py) both derive from `RunConfig`. Where the two tasks
need different defaults, the base field's help says both and why, and the text config re-declares only the
default with `task_default()`. A config object validates itself on construction (`__post_init__`): the same
rules, in the same words, whether it was built from YAML, a host form or Python.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..run.optimizers import optimizer_names
from .fields import field_meta, option
from .validate import check_range, coerce, field_types

CONFIG_VERSION = 1
MAX_SEED = 2**32 - 1  # torch's seed is 64-bit, numpy's and the WebUI's 32-bit
SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)
# Keys whose old text-LoRA spelling of "unset" was 0; both tasks now write nothing (null) and 0 still loads.
ZERO_MEANS_UNSET = ("max_train_steps", "save_steps")

MODEL = "Base model"
NETWORK = "Network"
TRAIN = "Training"
SAVE = "Saving and output"
SAMPLE = "Samples and logging"


@dataclass(kw_only=True)
class RunConfig:
    """Keys shared by image and text training. Subclasses add their task's keys and `check()` rules."""

    base_model: str = option(
        help="The model the LoRA is trained on. Image: a single-file .safetensors (original SD layout), a "
        "diffusers folder, a Hugging Face repo id, or `toy` for the built-in toy model. Text (`task: llm`): a "
        "causal LM's Hugging Face id or local folder (Llama, Qwen2, ...).",
        section=MODEL,
        aliases=("pretrained_model_name_or_path", "model", "model_name_or_path"),
    )
    config_version: int = option(CONFIG_VERSION, help="Config format version.", section=MODEL, min=1)
    task: str = option(
        "image", help="What to train: image (SD LoRA) or llm.", section=MODEL, choices=("image", "llm")
    )
    lora_rank: int = option(
        16,
        help="LoRA rank (dim).",
        section=NETWORK,
        min=1,
        max=1024,
        aliases=("network_dim", "rank", "r", "lora_r"),
    )
    lora_alpha: float = option(
        16.0,
        help="LoRA alpha; the update is scaled by alpha / rank (alpha / sqrt(rank) with rsLoRA). Default 16 for "
        "images (= rank, the WebUI community's habit) and 32 for text (2 x rank, the usual peft/QLoRA recipe).",
        section=NETWORK,
        min=0.0,
        aliases=("network_alpha", "alpha"),
    )
    dropout: float = option(
        0.0,
        help="Dropout on the LoRA path. Default 0 for images (few images, many repeats) and 0.05 for text (the "
        "peft recipe against over-fitting small instruction sets).",
        section=NETWORK,
        min=0.0,
        max=1.0,
        aliases=("lora_dropout", "network_dropout"),
    )
    batch_size: int = option(
        1,
        help="Samples per step per device. Default 1 image (memory) and 4 text rows (packed rows are short).",
        section=TRAIN,
        min=1,
        max=1024,
        aliases=("train_batch_size",),
    )
    epochs: int = option(
        10,
        help="Passes over the data (ignored when max_train_steps is set). Default 10 for 20-200 images, 3 for "
        "text (instruction sets are thousands of rows; more passes memorise them).",
        section=TRAIN,
        min=1,
        max=1_000_000,
        aliases=("max_train_epochs", "num_epochs"),
    )
    max_train_steps: int | None = option(
        None,
        help="Stop after this many optimizer steps; empty (or 0): from epochs.",
        section=TRAIN,
        min=1,
        max=100_000_000,
    )
    gradient_accumulation_steps: int = option(
        1, help="Micro-batches per optimizer step.", section=TRAIN, min=1, max=10_000
    )
    learning_rate: float = option(
        1e-4,
        help="Peak learning rate (image: of the U-Net LoRA unless unet_lr is set). Default 1e-4 for images, "
        "2e-4 for text (the peft/QLoRA recipes for attention+MLP LoRA).",
        section=TRAIN,
        min=0.0,
        max=10.0,
        aliases=("lr",),
    )
    optimizer: str = option(
        "adamw",
        help="adamw, adamw8bit (8-bit states; needs bitsandbytes, which from 0.50 runs on the CPU too), prodigy or "
        "adafactor.",
        section=TRAIN,
        choices=optimizer_names(),
        aliases=("optimizer_type",),
    )
    optimizer_args: dict[str, Any] = option(
        help="Extra optimizer keyword arguments.", section=TRAIN, default_factory=dict
    )
    weight_decay: float = option(
        0.01,
        help="Weight decay. Default 0.01 for images (kohya's) and 0 for text (the peft/TRL recipes).",
        section=TRAIN,
        min=0.0,
    )
    max_grad_norm: float = option(1.0, help="Gradient clipping norm (0 disables).", section=TRAIN, min=0.0)
    lr_scheduler: str = option(
        "constant",
        help="Learning-rate schedule (after warm-up). Default constant for images (kohya's), cosine for text "
        "(the peft/TRL recipes).",
        section=TRAIN,
        choices=SCHEDULERS,
    )
    lr_warmup_steps: float = option(
        0,
        help="Warm-up steps, or a fraction of all steps when < 1.",
        section=TRAIN,
        min=0,
        max=100_000_000,
        aliases=("warmup_steps",),
    )
    lr_scheduler_num_cycles: int = option(
        1, help="Restarts for cosine_with_restarts.", section=TRAIN, min=1, max=10_000
    )
    mixed_precision: str = option(
        "auto",
        help="bf16, fp16 (CUDA only), no, or auto (bf16 where the hardware has it and it is fast).",
        section=TRAIN,
        choices=("auto", "no", "bf16", "fp16"),
    )
    gradient_checkpointing: bool = option(False, help="Trade compute for memory.", section=TRAIN)
    seed: int = option(42, help="Random seed.", section=TRAIN, min=0, max=MAX_SEED)
    early_stopping_patience: int = option(
        0,
        help="Stop after N evaluations (image: validation loss; text: eval loss) without improvement; the best "
        "LoRA is kept. 0: off.",
        section=TRAIN,
        min=0,
    )
    output_dir: str = option(
        "output",
        help="Where LoRA files, checkpoints, samples and logs go. Default output (image), output/llm (text).",
        section=SAVE,
        path=True,
    )
    save_steps: int | None = option(
        None,
        help="Save a resumable checkpoint (image: and a LoRA file) every N steps; empty (or 0): only at the end.",
        section=SAVE,
        min=1,
        aliases=("save_every_n_steps",),
    )
    keep_last_n: int = option(
        3,
        help="Keep the last N intermediate saves (0 keeps all). Default 3 (image), 2 (text: an adapter "
        "checkpoint with its optimizer state is large).",
        section=SAVE,
        min=0,
        aliases=("save_last_n_steps",),
    )
    resume: str = option(
        "none",
        help="`auto` continues from the latest checkpoint in output_dir; none; or a checkpoint folder. Default "
        "none for images (a new run over an old folder starts fresh, as kohya's does), auto for text.",
        section=SAVE,
    )
    logging: bool = option(True, help="Write TensorBoard logs under <output_dir>/logs.", section=SAMPLE)
    log_every_n_steps: int = option(
        1, help="How often loss is synchronised, logged and checked for NaN.", section=SAMPLE, min=1
    )

    def __post_init__(self) -> None:
        """Refuse a bad value however the object was built (YAML, host form, Python) with the loader's words."""
        types_ = field_types(type(self))
        for f in dataclasses.fields(self):
            value = coerce(f.name, getattr(self, f.name), types_[f.name])
            check_range(f.name, value, field_meta(f))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Cross-key rules of the task (raise ConfigError); subclasses extend it."""
        from .optimizers import check_optimizer_args

        check_optimizer_args(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in declaration order (for YAML and metadata)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def task_default(name: str, default: Any) -> Any:
    """Re-declare base field `name` with the task's own default (the base help says which and why)."""
    base = {f.name: f for f in dataclasses.fields(RunConfig)}[name]
    meta = field_meta(base)
    return option(
        default, **{k: meta[k] for k in ("help", "section", "choices", "min", "max", "aliases", "path")}
    )


def unset_zero(key: str, value: Any) -> Any:
    """The text config's old spelling of "unset" (0) for keys that are now empty when unset."""
    if key in ZERO_MEANS_UNSET and not isinstance(value, bool) and value in (0, "0"):
        return None
    return value
