"""What a LoRA is checked against: the layers of a real single-file checkpoint, or of a family's standard model
built on the meta device from its published configuration (`Family.reference_model`; no weights, no download).

Layer names are the WebUI's (`Family.webui_layers`, `Family.checkpoint_layers`), so the self-test, merge into a
checkpoint and conversions name layers exactly as the apps that load the files do.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..models.families import Family, family_names, family_of_checkpoint, get_family, known_kinds


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a single-file .safetensors checkpoint, read from its header only."""
    from ..models.files import safetensors_shapes

    return safetensors_shapes(Path(path), "checkpoint")


def checkpoint_family(shapes: dict[str, tuple[int, ...]]) -> Family:
    """The family of a single file, from its key layout."""
    family = family_of_checkpoint(list(shapes))
    if family is None:
        raise ModelError(
            f"this file is not a {known_kinds()} checkpoint (no text-encoder keys of a known layout); is it a "
            "LoRA or a VAE, not a checkpoint?"
        )
    return family


def kohya_targets(base: Any, with_conv: bool = True) -> list[tuple[str, object]]:
    """(kohya name, Target) for every layer a LoRA (or, with_conv, LoCon) can hold in `base`: the training
    engine's own selection and namer, so tools name layers exactly as training does."""
    from ..network.lora import NetworkSpec, collect_targets

    namer = base.family.kohya_name(base)
    spec = NetworkSpec(
        network_type="locon" if with_conv else "lora", rank=4, alpha=4, train_text_encoder=True
    )
    return [(namer(t.component, t.path), t) for t in collect_targets(base, spec)]


def meta_base(name: str) -> Any:
    """The standard model of the family called `name`, its modules on the meta device."""
    if name not in family_names():
        raise ModelError(
            f"unknown base model family {name!r}; choose one of {family_names()} or give a checkpoint."
        )
    return get_family(name).reference_model()


@lru_cache(maxsize=8)
def reference_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """WebUI layer name -> weight shape of the standard model of a family."""
    family = get_family(name)
    return family.webui_layers(meta_base(name))
