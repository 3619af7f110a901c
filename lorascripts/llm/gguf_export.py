"""A peft adapter as a GGUF LoRA adapter for llama.cpp (`--lora`) and Ollama (`ADAPTER`), plus the Modelfile.

The layout follows llama.cpp's own `convert_lora_to_gguf.py`: `general.type = adapter`, `adapter.type = lora`,
`adapter.lora.alpha` (float32), one `<gguf tensor name>.lora_a` (r x in) and `.lora_b` (out x r) pair per
adapted weight, tensor names from gguf's `TensorNameMap` for the base architecture, and Llama's q/k row
permutation (its `LlamaModel.permute`, applied to B: the rows of B @ A are the rows of the weight). The converter
itself is a script that needs a llama.cpp checkout and the base model's config from the hub, so the few steps it
takes for these architectures are written here against the `gguf` package.

llama.cpp scales every pair by alpha / rank (rank read from the tensor shapes). rsLoRA scales by alpha / sqrt(r),
so its alpha is written as alpha * sqrt(r) (llama.cpp's converter does not, and such adapters come out too weak).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError
from ..fileio import atomic_copy, atomic_write_text
from .serving import read_adapter_config

logger = logging.getLogger(__name__)
# transformers architecture -> (gguf architecture, q/k rows permuted as llama.cpp's LlamaModel does)
ARCHITECTURES = {
    "LlamaForCausalLM": ("LLAMA", True),
    "MistralForCausalLM": ("LLAMA", True),
    "Qwen2ForCausalLM": ("QWEN2", False),
}
PREFIX = "base_model.model."


@dataclass
class BaseShape:
    """What the export needs from the base model's config."""

    architecture: str
    gguf_arch: Any
    permute_qk: bool
    layers: int
    heads: int
    kv_heads: int


def base_shape(base: str, allow_remote_code: bool = False) -> BaseShape:
    """The base model's architecture and head counts (its config.json only; weights are not read)."""
    import gguf
    from transformers import AutoConfig

    local = {"local_files_only": True} if Path(base).is_dir() else {}
    try:
        config = AutoConfig.from_pretrained(base, trust_remote_code=allow_remote_code, **local)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not read the config of the base model {base}: {exc}") from None
    architecture = (getattr(config, "architectures", None) or ["?"])[0]
    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"GGUF export knows {sorted(ARCHITECTURES)}, not {architecture}; use llama.cpp's "
            "convert_lora_to_gguf.py for it."
        )
    arch_name, permute = ARCHITECTURES[architecture]
    heads = int(config.num_attention_heads)
    return BaseShape(
        architecture,
        getattr(gguf.MODEL_ARCH, arch_name),
        permute,
        int(config.num_hidden_layers),
        heads,
        int(getattr(config, "num_key_value_heads", None) or heads),
    )


def permute_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Llama q/k layout: in each head, the two rotary halves are interleaved."""
    return (
        rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )


def _module_name(key: str) -> tuple[str, str]:
    """('model.layers.0.self_attn.q_proj', 'a' | 'b') for a peft key, or a ModelError for anything else."""
    for part, side in ((".lora_A.weight", "a"), (".lora_B.weight", "b")):
        if key.endswith(part):
            return key.removeprefix(PREFIX)[: -len(part)], side
    if "lora_magnitude_vector" in key:
        raise ModelError(
            "DoRA adapters have no GGUF form (llama.cpp applies plain LoRA); export the merged model."
        )
    raise ModelError(f"adapter tensor {key!r} is not a LoRA A/B matrix; llama.cpp cannot load it.")


def gguf_tensors(weights: dict[str, Any], shape: BaseShape, dtype: str = "f32") -> dict[str, np.ndarray]:
    """peft adapter tensors -> GGUF adapter tensors (names, orientation and Llama's q/k permutation)."""
    import gguf

    names = gguf.get_tensor_name_map(shape.gguf_arch, shape.layers)
    out: dict[str, np.ndarray] = {}
    for key, tensor in weights.items():
        module, side = _module_name(key)
        target = names.get_name(module)
        if target is None:
            raise ModelError(f"{module} has no tensor in llama.cpp's {shape.architecture} layout.")
        array = tensor.float().numpy()
        if side == "b" and shape.permute_qk and module.endswith(("q_proj", "k_proj")):
            array = permute_rows(array, shape.heads if module.endswith("q_proj") else shape.kv_heads)
        out[f"{target}.weight.lora_{side}"] = array.astype(np.float16 if dtype == "f16" else np.float32)
    return out


def gguf_alpha(config: dict[str, Any]) -> float:
    """adapter.lora.alpha: llama.cpp scales by alpha / r, so rsLoRA's alpha / sqrt(r) becomes alpha * sqrt(r)."""
    if config.get("alpha_pattern"):
        raise ModelError("per-module alpha_pattern has no GGUF form (one adapter.lora.alpha); merge instead.")
    alpha = float(config.get("lora_alpha", 8))
    return alpha * math.sqrt(int(config["r"])) if config.get("use_rslora") else alpha


def write_gguf(path: Path, arch: Any, header: Callable[[Any], None], tensors: dict[str, np.ndarray]) -> Path:
    """A GGUF file: `header(writer)` adds the metadata; staged in the target folder, copied into place
    atomically (never a half file under the final name)."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        writer = gguf.GGUFWriter(str(staged), gguf.MODEL_ARCH_NAMES[arch])
        header(writer)
        for name, array in tensors.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return atomic_copy(staged, path)


def export_gguf_adapter(
    adapter: Path | str, out: Path | str, base: str | None = None, dtype: str = "f32"
) -> Path:
    """Write `out` (.gguf): the adapter folder as a llama.cpp LoRA adapter. `base` defaults to the adapter's
    base_model_name_or_path."""
    from safetensors.torch import load_file

    adapter, out = Path(adapter), Path(out)
    config = read_adapter_config(adapter)
    if config.get("use_dora"):
        raise ModelError(
            "DoRA adapters have no GGUF form (llama.cpp applies plain LoRA); export the merged model."
        )
    weights_file = adapter / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ModelError(
            f"{adapter} has no adapter_model.safetensors (weights are read only from .safetensors)."
        )
    shape = base_shape(base or config.get("base_model_name_or_path") or "")
    tensors = gguf_tensors(load_file(str(weights_file)), shape, dtype)
    alpha = gguf_alpha(config)

    def header(writer: Any) -> None:
        import gguf

        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(adapter.name)

    write_gguf(out, shape.gguf_arch, header, tensors)
    logger.info("GGUF adapter written to %s (%d tensors)", out, len(tensors))
    return out


def write_modelfile(folder: Path, base_from: str, adapter_file: Path) -> Path:
    """An Ollama Modelfile in `folder`: `FROM` the base model (an Ollama model name or a base .gguf path) and
    `ADAPTER` our GGUF adapter (relative to the Modelfile when it sits beside it)."""
    inside = adapter_file.resolve().parent == folder.resolve()
    adapter_ref = f"./{adapter_file.name}" if inside else str(adapter_file.resolve())
    return atomic_write_text(folder / "Modelfile", f"FROM {base_from}\nADAPTER {adapter_ref}\n")
