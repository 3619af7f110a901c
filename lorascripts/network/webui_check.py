"""Would the WebUI apply every key of this LoRA? Each module's name is resolved by the family's restatement of
the WebUI's matching (`Family.resolve_webui_layer`; SD: `models/families/sd/webui_names.py`), then its delta
shape is checked against the layer, and fused attention sets must be complete (LORA_FORMAT.md §4.1, §9.5).

Forge adds one rule of its own (`extensions-builtin/sd_forge_lora/networks.py`, `load_lora_for_models`): the
file's tensor keys that neither the model's nor the text encoders' key map consumes (ComfyUI's `load_lora`,
vendored in `packages_3rdparty/comfyui_lora_collection`) are counted, and with more than 12 of them Forge
prints "LoRA version mismatch" and applies nothing of the file. Every key of a module with no layer counts
(up, down and alpha), and of a module of an unknown type every key but its alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models.families import Family

LORA_TYPES = (
    ("lora_up.weight", "lora_down.weight"),
    ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
    ("lokr_w1", "lokr_w2"),
    ("lokr_w1", "lokr_w2_a", "lokr_w2_b"),
    ("lokr_w1_a", "lokr_w1_b", "lokr_w2"),
    ("lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"),
)
OPTIONAL = {"alpha", "scale", "dora_scale", "lora_mid.weight", "hada_t1", "hada_t2", "lokr_t2", "bias"}
FORGE_UNMATCHED_LIMIT = 12  # more unmatched keys than this and Forge rejects the whole file


@dataclass
class CompatReport:
    """Outcome of the check: modules applied, and each kind of problem with examples."""

    applied: int = 0
    total: int = 0
    unmatched: list[str] = field(default_factory=list)
    shape_errors: list[str] = field(default_factory=list)
    incomplete_mha: list[str] = field(default_factory=list)
    unknown_types: list[str] = field(default_factory=list)
    forge_unmatched: list[str] = field(default_factory=list)  # tensor keys Forge's key maps leave over

    @property
    def forge_rejects(self) -> bool:
        """Forge would refuse the whole file ("LoRA version mismatch")."""
        return len(self.forge_unmatched) > FORGE_UNMATCHED_LIMIT

    @property
    def ok(self) -> bool:
        return self.total > 0 and not (
            self.unmatched
            or self.shape_errors
            or self.incomplete_mha
            or self.unknown_types
            or self.forge_rejects
        )

    def forge_summary(self) -> str:
        """Forge's verdict: `Forge: N unmatched keys (limit 12)`, and what it does with the file."""
        count = len(self.forge_unmatched)
        text = f"Forge: {count} unmatched keys (limit {FORGE_UNMATCHED_LIMIT})"
        if self.forge_rejects:
            return (
                text
                + " → would reject the whole file (LoRA version mismatch), e.g. "
                + ", ".join(self.forge_unmatched[:3])
            )
        return text + (" → loads the rest" if count else "")

    def summary(self) -> str:
        text = f"{self.applied}/{self.total} LoRA modules applied by the WebUI's key rules"
        for label, items in (
            ("dropped (no such layer)", self.unmatched),
            ("shape mismatch", self.shape_errors),
            ("incomplete q/k/v/out set (ignored)", self.incomplete_mha),
            ("unknown tensor types (load error)", self.unknown_types),
        ):
            if items:
                text += f"; {len(items)} {label}, e.g. {items[0]}"
        return f"{text}; {self.forge_summary()}"


def _delta_shape(parts: dict[str, tuple[int, ...]]) -> tuple[int, int] | None:
    """(out, in x kernel) of the weight update a module's tensors describe."""
    if "lora_up.weight" in parts:
        up, down = parts["lora_up.weight"], parts["lora_down.weight"]
        return up[0], math.prod(down[1:])
    if "hada_w1_a" in parts:
        return parts["hada_w1_a"][0], parts["hada_w1_b"][1]

    def factor(i: int) -> tuple[int, int]:
        if f"lokr_w{i}" in parts:
            shape = parts[f"lokr_w{i}"]
            return shape[0], math.prod(shape[1:])
        return parts[f"lokr_w{i}_a"][0], math.prod(parts[f"lokr_w{i}_b"][1:])

    if any(k.startswith("lokr_") for k in parts):
        (a, b), (c, d) = factor(1), factor(2)
        return a * c, b * d
    return None


def check_webui_compat(
    lora_shapes: dict[str, tuple[int, ...]],
    model_shapes: dict[str, tuple[int, ...]],
    family: Family,
    other_keys: list[str] | None = None,
) -> CompatReport:
    """Check every module of a LoRA (key -> shape) against the model's original-layout layers; `other_keys`:
    the file's keys that are no kohya module (Forge counts them as unmatched)."""
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in lora_shapes.items():
        base, _, part = key.partition(".")
        modules.setdefault(base, {})[part] = shape
    report = CompatReport(total=len(modules), forge_unmatched=sorted(other_keys or []))
    fused: dict[str, set[str]] = {}
    for base, parts in sorted(modules.items()):
        kinds = set(parts) - OPTIONAL
        layer, role = family.resolve_webui_layer(base, model_shapes)
        if layer is None or not any(set(t) == kinds for t in LORA_TYPES):
            # ComfyUI's load_lora (Forge's) takes a mapped module's alpha whatever its type, nothing else
            kept = {"alpha", "dora_scale"} if layer is not None else set()
            report.forge_unmatched += [f"{base}.{part}" for part in sorted(parts) if part not in kept]
        if not any(set(t) == kinds for t in LORA_TYPES):
            report.unknown_types.append(f"{base}: {sorted(parts)}")
            continue
        if layer is None:
            report.unmatched.append(base)
            continue
        out_in = _delta_shape(parts)
        weight = model_shapes[layer]
        expected = (weight[0] // 3, weight[1]) if role else (weight[0], math.prod(weight[1:]))
        if out_in != expected:
            report.shape_errors.append(f"{base}: {out_in} vs {expected}")
            continue
        if role or (layer.endswith("_attn_out_proj") and layer[: -len("_out_proj")] in model_shapes):
            fused.setdefault(layer.removesuffix("_out_proj"), set()).add(role or "out_proj")
        report.applied += 1
    for layer, roles in sorted(fused.items()):
        if roles != {"q_proj", "k_proj", "v_proj", "out_proj"}:
            report.incomplete_mha.append(f"{layer}: has {sorted(roles)}")
            report.applied -= len(roles)
    return report
