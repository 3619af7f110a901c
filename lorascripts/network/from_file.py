"""Attach a saved LoRA file to a loaded base model (for sampling, grids and tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .lora import ALGORITHMS, LoraNetwork, NetworkSpec


def _number(value: object, default: float) -> float:
    """A metadata number; hand-edited or foreign files may hold anything there, so bad values fall back."""
    try:
        number = float(str(value))
    except ValueError:
        return default
    return number if number == number and abs(number) != float("inf") else default


def spec_from_metadata(metadata: dict[str, str], tensors: dict[str, Any]) -> NetworkSpec:
    """The NetworkSpec a file was trained with (type from ss_network_args / tensor names)."""
    try:
        args = json.loads(metadata.get("ss_network_args", "{}") or "{}")
    except json.JSONDecodeError:
        args = {}  # a hand-edited metadata field: fall back to what the tensor names say
    args = args if isinstance(args, dict) else {}
    algo = args.get("algo")
    if algo is None:
        names = " ".join(tensors)
        algo = "loha" if "hada_w1_a" in names else "lokr" if "lokr_w" in names else "lora"
    if algo == "lora" and "conv_dim" in args:
        algo = "locon"
    if algo not in ALGORITHMS:
        raise ModelError(
            f"network type {algo!r} (ss_network_args) is not supported; known: {', '.join(ALGORITHMS)}."
        )
    has_te = any(k.startswith("lora_te") for k in tensors)
    return NetworkSpec(
        network_type=algo,
        rank=max(1, int(_number(metadata.get("ss_network_dim"), 4))),
        alpha=_number(metadata.get("ss_network_alpha"), 1.0),
        conv_rank=max(1, int(_number(args["conv_dim"], 4))) if "conv_dim" in args else None,
        conv_alpha=_number(args["conv_alpha"], 1.0) if "conv_alpha" in args else None,
        train_text_encoder=has_te,
    )


def load_lora(base: Any, path: Path, multiplier: float = 1.0) -> LoraNetwork:
    """Build, load and hook the LoRA in `path` into `base` at `multiplier` (call `.remove()` to detach)."""
    from ..toolbox.convert import read_lora_any

    tensors, metadata = read_lora_any(path)  # kohya keys, or diffusers keys converted in memory
    tensors = base.family.lora_network_tensors(base, tensors)
    try:
        network = LoraNetwork.create(base, spec_from_metadata(metadata, tensors), initial=tensors)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    network.to(next(base.denoiser.parameters()).device)
    network.apply()
    network.set_multiplier(multiplier)
    network.eval()
    return network
