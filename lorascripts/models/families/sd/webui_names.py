"""AUTOMATIC1111's name matching for SD LoRAs: `convert_diffusers_name_to_compvis` plus its four fallbacks
(LORA_FORMAT.md §4.1). The WebUI silently drops what it cannot place; we cannot import it in tests or at the end
of training, so its rules are restated here and checked against the original-layout layer names
(ldm_names.original_layout_shapes) of the actual base model.
"""

from __future__ import annotations

import re

RESNET_SUFFIX = {
    "conv1": "in_layers_2",
    "conv2": "out_layers_3",
    "norm1": "in_layers_0",
    "norm2": "out_layers_0",
    "time_emb_proj": "emb_layers_1",
    "conv_shortcut": "skip_connection",
}


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
