"""Would AUTOMATIC1111 apply every key of this LoRA? A re-implementation of its name matching.

The WebUI resolves a key's base name with `convert_diffusers_name_to_compvis` plus four fallbacks
(LORA_FORMAT.md §4.1) and silently drops what it cannot place. We cannot import the WebUI in tests or at the end
of training, so its rules are restated here and checked against the original-layout layer names and shapes
of the actual base model (models/ldm_names.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

RESNET_SUFFIX = {
    "conv1": "in_layers_2",
    "conv2": "out_layers_3",
    "norm1": "in_layers_0",
    "norm2": "out_layers_0",
    "time_emb_proj": "emb_layers_1",
    "conv_shortcut": "skip_connection",
}
LORA_TYPES = (
    ("lora_up.weight", "lora_down.weight"),
    ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
    ("lokr_w1", "lokr_w2"),
    ("lokr_w1", "lokr_w2_a", "lokr_w2_b"),
    ("lokr_w1_a", "lokr_w1_b", "lokr_w2"),
    ("lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"),
)
OPTIONAL = {"alpha", "scale", "dora_scale", "lora_mid.weight", "hada_t1", "hada_t2", "lokr_t2", "bias"}


def _ints(m: re.Match) -> list:
    return [int(g) if g.isdigit() else g for g in m.groups()]


def to_compvis(key: str, is_sd2: bool) -> str:
    """The WebUI's `convert_diffusers_name_to_compvis`."""

    def match(pattern: str) -> list | None:
        m = re.match(pattern, key)
        return _ints(m) if m else None

    if m := match(r"lora_unet_conv_in(.*)"):
        return f"diffusion_model_input_blocks_0_0{m[0]}"
    if m := match(r"lora_unet_conv_out(.*)"):
        return f"diffusion_model_out_2{m[0]}"
    if m := match(r"lora_unet_time_embedding_linear_(\d+)(.*)"):
        return f"diffusion_model_time_embed_{m[0] * 2 - 2}{m[1]}"
    if m := match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)"):
        suffix = RESNET_SUFFIX.get(m[3], m[3]) if m[1] == "resnets" else m[3]
        return (
            f"diffusion_model_input_blocks_{1 + m[0] * 3 + m[2]}_{1 if m[1] == 'attentions' else 0}_{suffix}"
        )
    if m := match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)"):
        suffix = RESNET_SUFFIX.get(m[2], m[2]) if m[0] == "resnets" else m[2]
        return f"diffusion_model_middle_block_{1 if m[0] == 'attentions' else m[1] * 2}_{suffix}"
    if m := match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)"):
        suffix = RESNET_SUFFIX.get(m[3], m[3]) if m[1] == "resnets" else m[3]
        return f"diffusion_model_output_blocks_{m[0] * 3 + m[2]}_{1 if m[1] == 'attentions' else 0}_{suffix}"
    if m := match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv"):
        return f"diffusion_model_input_blocks_{3 + m[0] * 3}_0_op"
    if m := match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv"):
        return f"diffusion_model_output_blocks_{2 + m[0] * 3}_{2 if m[0] > 0 else 1}_conv"
    if m := match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)"):
        if is_sd2:
            return f"model_transformer_resblocks_{m[0]}_{_openclip(m[1])}"
        return f"transformer_text_model_encoder_layers_{m[0]}_{m[1]}"
    if m := match(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)"):
        return f"1_model_transformer_resblocks_{m[0]}_{_openclip(m[1])}"
    return key


def _openclip(rest: str) -> str:
    if "mlp_fc1" in rest:
        return rest.replace("mlp_fc1", "mlp_c_fc")
    if "mlp_fc2" in rest:
        return rest.replace("mlp_fc2", "mlp_c_proj")
    return rest.replace("self_attn", "attn")


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


def resolve_layer(
    base: str, model: dict[str, tuple[int, ...]], is_sd2: bool
) -> tuple[str | None, str | None]:
    """(layer name, q/k/v role when it patches a fused attention) — the WebUI's lookup with its fallbacks."""
    name = to_compvis(base, is_sd2)
    if name in model:
        return name, None
    m = re.match(r"(.*)_([qkv]_proj)$", name)
    if m and m[1] in model:
        return m[1], m[2]
    if base.startswith("lora_unet"):
        alt = "diffusion_model" + name[len("lora_unet") :] if name.startswith("lora_unet") else None
        if alt in model:
            return alt, None
    if name.startswith("lora_te1_text_model"):
        for head in ("0_transformer_text_model", "transformer_text_model"):
            alt = head + name[len("lora_te1_text_model") :]
            if alt in model:
                return alt, None
    return None, None


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
    lora_shapes: dict[str, tuple[int, ...]], model_shapes: dict[str, tuple[int, ...]], family: str
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
        layer, role = resolve_layer(base, model_shapes, family == "sd2")
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
