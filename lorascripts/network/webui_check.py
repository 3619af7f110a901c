"""Would the WebUI apply every key of this LoRA? Each module's name is resolved by the family's restatement of
the WebUI's matching (`Family.resolve_webui_layer`; SD: `models/families/sd/webui_names.py`), then its delta
shape is checked against the layer, and fused attention sets must be complete (LORA_FORMAT.md §4.1, §9.5).
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


@dataclass
class CompatReport:
    """Outcome of the check: modules applied, and each kind of problem with examples."""

    applied: int = 0
    total: int = 0
    unmatched: list[str] = field(default_factory=list)
    shape_errors: list[str] = field(default_factory=list)
    incomplete_mha: list[str] = field(default_factory=list)
    unknown_types: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.total > 0 and not (
            self.unmatched or self.shape_errors or self.incomplete_mha or self.unknown_types
        )

    def summary(self) -> str:
        text = f"{self.applied}/{self.total} LoRA modules applied by AUTOMATIC1111's rules"
        for label, items in (
            ("dropped (no such layer)", self.unmatched),
            ("shape mismatch", self.shape_errors),
            ("incomplete q/k/v/out set (ignored)", self.incomplete_mha),
            ("unknown tensor types (load error)", self.unknown_types),
        ):
            if items:
                text += f"; {len(items)} {label}, e.g. {items[0]}"
        return text


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
    lora_shapes: dict[str, tuple[int, ...]], model_shapes: dict[str, tuple[int, ...]], family: Family
) -> CompatReport:
    """Check every module of a LoRA (key -> shape) against the model's original-layout layers."""
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in lora_shapes.items():
        base, _, part = key.partition(".")
        modules.setdefault(base, {})[part] = shape
    report = CompatReport(total=len(modules))
    fused: dict[str, set[str]] = {}
    for base, parts in sorted(modules.items()):
        kinds = set(parts) - OPTIONAL
        if not any(set(t) == kinds for t in LORA_TYPES):
            report.unknown_types.append(f"{base}: {sorted(parts)}")
            continue
        layer, role = family.resolve_webui_layer(base, model_shapes)
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
