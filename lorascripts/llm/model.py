"""Loading a causal LM and its tokenizer for training or generation, and attaching the peft LoRA."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ModelError

logger = logging.getLogger(__name__)


def _source_kwargs(source: str, allow_remote_code: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": allow_remote_code}
    if Path(source).is_dir():
        kwargs["local_files_only"] = True
    return kwargs


def load_tokenizer(source: str, allow_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **_source_kwargs(source, allow_remote_code))
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the tokenizer of {source}: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    source: str, dtype: torch.dtype, allow_remote_code: bool = False, in_4bit: bool = False
) -> Any:
    """The base model, frozen; 4-bit (QLoRA) only with CUDA and bitsandbytes, else a clear error."""
    import transformers
    from transformers import AutoModelForCausalLM

    kwargs = _source_kwargs(source, allow_remote_code)
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    kwargs[dtype_key] = dtype
    if in_4bit:
        if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError(
                "load_in_4bit (QLoRA) needs a CUDA GPU and the bitsandbytes package; "
                "set load_in_4bit: false to train in full precision here."
            )
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the causal LM {source}: {exc}") from None
    if in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    model.requires_grad_(False)
    return model


def attach_lora(model: Any, cfg: Any) -> Any:
    """A trainable peft LoRA on the model: a new one from the config, or `init_adapter` to continue training."""
    from peft import LoraConfig, get_peft_model

    if cfg.init_adapter:
        return load_adapter(model, cfg.init_adapter, trainable=True, key="init_adapter")
    targets = cfg.target_modules
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"target_modules {targets}: {exc}") from None


def load_for_generation(base: str, adapter: str | None, allow_remote_code: bool = False) -> tuple[Any, Any]:
    """Base (+ adapter folder) in eval mode, and the tokenizer (the adapter's own when it has one)."""

    tokenizer_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base
    tokenizer = load_tokenizer(tokenizer_source, allow_remote_code)
    model = load_causal_lm(base, torch.float32, allow_remote_code)
    if adapter:
        model = load_adapter(model, adapter, trainable=False, key="--lora")
    return model.eval(), tokenizer


def load_adapter(model: Any, folder: str, trainable: bool, key: str) -> Any:
    """A peft adapter folder on `model`; a folder that is not one, or a damaged one, is a ModelError naming it
    (peft's own errors - a missing file, JSON or safetensors damage, shapes of another base - say neither)."""
    from peft import PeftModel

    if not (Path(folder) / "adapter_config.json").is_file():
        raise ModelError(f"`{key}` {folder} is not a PEFT adapter folder (no adapter_config.json).")
    try:
        return PeftModel.from_pretrained(model, folder, is_trainable=trainable)
    except Exception as exc:  # noqa: BLE001 - the boundary where the user's folder enters peft
        raise ModelError(
            f"`{key}` {folder} could not be loaded as an adapter of this base model "
            f"({type(exc).__name__}: {str(exc)[:200]}); use an adapter folder written by training on this base."
        ) from None
