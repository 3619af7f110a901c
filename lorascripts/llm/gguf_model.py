"""A whole causal LM folder (the merged model, or a base) as a GGUF model file for llama.cpp and Ollama.

Hand-written for the architectures gguf_export.py knows (Llama, Mistral, Qwen2) because llama.cpp's
`convert_hf_to_gguf.py` is a script inside a llama.cpp checkout, not a package; it follows that script's steps:
hyper-parameters under `<arch>.*`, a GPT-2 style BPE vocabulary (`tokenizer.ggml.model = gpt2`, special tokens
as CONTROL), merges and special ids from gguf's `SpecialVocab`, tensor names from gguf's `TensorNameMap`, Llama's
q/k rows permuted, norms in float32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .gguf_export import ARCHITECTURES, base_shape, permute_rows, write_gguf

logger = logging.getLogger(__name__)


def _vocabulary(tokenizer: Any, size: int) -> tuple[list[str], list[int]]:
    """Token strings and gguf token types for ids 0..size-1 (ids past the tokenizer are padding rows)."""
    import gguf

    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
    }
    tokens, types = [], []
    for i in range(size):
        token = tokenizer.convert_ids_to_tokens(i) if i < len(tokenizer) else None
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    return tokens, types


def _hyperparameters(writer: Any, config: Any, name: str, dtype: str) -> None:
    import gguf

    writer.add_name(name)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    rope = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get(
        "rope_theta"
    )
    writer.add_rope_freq_base(float(rope or 10000.0))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)


def _tokenizer(writer: Any, folder: Path, tokenizer: Any, size: int) -> None:
    import gguf

    tokens, types = _vocabulary(tokenizer, size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # our tokenizers split with the GPT-2 byte-level pattern
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=size)
    # llama.cpp must add a BOS token exactly when the Hugging Face tokenizer does
    bos = tokenizer.bos_token_id
    special.add_special_token["bos"] = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    special.add_to_gguf(writer)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def model_tensors(state: dict[str, Any], shape: Any, dtype: str) -> dict[str, np.ndarray]:
    """HF state dict -> GGUF tensors (names, Llama q/k permutation, norms and biases kept float32)."""
    import gguf

    names = gguf.get_tensor_name_map(shape.gguf_arch, shape.layers)
    out: dict[str, np.ndarray] = {}
    for key, tensor in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ModelError(f"{key} has no tensor in llama.cpp's {shape.architecture} layout.")
        array = tensor.float().numpy()
        if shape.permute_qk and key.endswith(
            ("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")
        ):
            array = permute_rows(array, shape.heads if ".q_proj." in key else shape.kv_heads)
        small = array.ndim == 1  # norms and biases stay float32, as llama.cpp's converter keeps them
        out[target] = array.astype(np.float16 if dtype == "f16" and not small else np.float32)
    return out


def export_gguf_model(folder: Path | str, out: Path | str, dtype: str = "f16") -> Path:
    """Write `out` (.gguf): the model folder (config, safetensors weights, tokenizer) as a GGUF model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, out = Path(folder), Path(out)
    shape = base_shape(str(folder))
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # llama.cpp reuses token_embd as the output when there is none
    tensors = model_tensors(state, shape, dtype)
    arch_name = ARCHITECTURES[shape.architecture][0]

    def header(writer: Any) -> None:
        _hyperparameters(writer, config, folder.name, dtype)
        _tokenizer(writer, folder, tokenizer, int(config.vocab_size))

    write_gguf(out, shape.gguf_arch, header, tensors)
    logger.info("GGUF model (%s, %s) written to %s", arch_name, dtype, out)
    return out


def export_merged_gguf(base: str, adapter: Path | str, out: Path | str, dtype: str = "f16") -> Path:
    """Write `out`: base + adapter merged into one GGUF model (what DoRA or patterned adapters need)."""
    import tempfile

    from .model import load_for_generation

    model, tokenizer = load_for_generation(base, str(adapter))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        folder = Path(tmp) / f"{Path(adapter).name}-merged"
        model.merge_and_unload().save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))
        return export_gguf_model(folder, out, dtype)
