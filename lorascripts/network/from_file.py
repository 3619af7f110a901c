"""Attach a saved LoRA file to a loaded base model (for sampling, grids and tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .lora import LoraNetwork, NetworkSpec
from .save import read_lora_file


def spec_from_metadata(metadata: dict[str, str], tensors: dict[str, Any]) -> NetworkSpec:
    """The NetworkSpec a file was trained with (type from ss_network_args / tensor names)."""
    args = json.loads(metadata.get("ss_network_args", "{}") or "{}")
    algo = args.get("algo")
    if algo is None:
        names = " ".join(tensors)
        algo = "loha" if "hada_w1_a" in names else "lokr" if "lokr_w" in names else "lora"
    if algo == "lora" and "conv_dim" in args:
        algo = "locon"
    has_te = any(k.startswith("lora_te") for k in tensors)
    return NetworkSpec(
        network_type=algo,
        rank=int(metadata.get("ss_network_dim", "4")) if metadata.get("ss_network_dim", "").isdigit() else 4,
        alpha=float(metadata.get("ss_network_alpha", "1") or 1),
        conv_rank=int(args["conv_dim"]) if "conv_dim" in args else None,
        conv_alpha=float(args["conv_alpha"]) if "conv_alpha" in args else None,
        train_text_encoder=has_te,
    )


def load_lora(base: Any, path: Path, multiplier: float = 1.0) -> LoraNetwork:
    """Build, load and hook the LoRA in `path` into `base` at `multiplier` (call `.remove()` to detach)."""
    tensors, metadata = read_lora_file(path)
    network = LoraNetwork.create(base, spec_from_metadata(metadata, tensors), initial=tensors)
    network.to(next(base.unet.parameters()).device)
    network.apply()
    network.set_multiplier(multiplier)
    network.eval()
    return network
