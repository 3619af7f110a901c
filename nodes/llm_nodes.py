"""GenerateText: a causal LM from models/LLM plus a text LoRA adapter (trained with `task: llm`) -> STRING.

Base models and adapters are folders under ComfyUI's models/LLM (an adapter is a folder with
adapter_config.json, as training writes it); nothing outside that folder is read.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from comfy_api.latest import io

from .paths import listed_choices, named_output, node_schema

NO_ADAPTER = "none"
_CACHE: dict[tuple[str, str], tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def llm_root() -> Path:
    import folder_paths

    return Path(folder_paths.models_dir) / "LLM"


def _folders(marker: str) -> list[str]:
    root = llm_root()
    if not root.is_dir():
        return []
    return sorted(p.parent.relative_to(root).as_posix() for p in root.glob(f"*/{marker}")) + sorted(
        p.parent.relative_to(root).as_posix() for p in root.glob(f"*/*/{marker}")
    )


def _inside_root(name: str) -> Path:
    root = llm_root().resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise ValueError(f"{name} is not a folder inside models/LLM.")
    return path


def _generate_here(key: tuple[str, str], base: str, lora: str | None, prompt: str, options: dict) -> str:
    """In ComfyUI's own process (its packages meet the engine's), with the last model kept loaded."""
    import torch

    from ..lorascripts.llm.generate import generate_text
    from ..lorascripts.llm.model import load_for_generation

    with _LOCK:
        if key not in _CACHE:
            _CACHE.clear()  # one model in memory at a time
            _CACHE[key] = load_for_generation(base, lora)
        model, tokenizer = _CACHE[key]
    with torch.inference_mode(False):
        return generate_text(model, tokenizer, prompt, **options)


class GenerateText(io.ComfyNode):
    """Write text in your trained voice: base LM + adapter + prompt."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            "GenerateText",
            "Generate Text with LoRA",
            description="Text from a causal LM in models/LLM and a text LoRA adapter trained with lora-scripts.",
            inputs=[
                io.Combo.Input(
                    "base_model", options=_folders("config.json"), tooltip="A model folder in models/LLM."
                ),
                io.Combo.Input(
                    "adapter",
                    options=[NO_ADAPTER, *_folders("adapter_config.json")],
                    tooltip="A text LoRA folder in models/LLM (output of `task: llm` training).",
                ),
                io.String.Input("prompt", multiline=True, default="", tooltip="What to write about."),
                io.Int.Input("max_new_tokens", default=128, min=1, max=4096, tooltip="Length limit."),
                io.Float.Input(
                    "temperature",
                    default=0.0,
                    min=0.0,
                    max=2.0,
                    step=0.05,
                    tooltip="0: always the most likely.",
                ),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Sampling seed."),
                io.String.Input(
                    "system", multiline=True, default="", optional=True, tooltip="Optional system message."
                ),
            ],
            outputs=[named_output(io.String, "text")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, base_model: str, adapter: str) -> bool | str:
        return listed_choices(cls, base_model=base_model, adapter=adapter)

    @classmethod
    def execute(
        cls,
        base_model: str,
        adapter: str,
        prompt: str,
        max_new_tokens: int,
        temperature: float,
        seed: int,
        system: str = "",
    ) -> io.NodeOutput:
        import sys

        from ..lorascripts.host.engine_env import engine_python

        base = str(_inside_root(base_model))
        lora = None if adapter == NO_ADAPTER else str(_inside_root(adapter))
        options = {
            "system": system,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        if engine_python() != sys.executable:  # the LLM libraries live in the engine's own environment
            from ..lorascripts.host.children import generate_in_child

            text = generate_in_child(base, lora, prompt, **options)
        else:
            text = _generate_here((base_model, adapter), base, lora, prompt, options)
        return io.NodeOutput(text, ui={"text": [text]})
