"""diffusers -> original (LDM/SGM) names for the U-Net, VAE and CLIP text encoders.

Why by hand: diffusers ships only the original -> diffusers direction (`single_file_utils`); the other
direction exists only as stand-alone scripts. We need it for three things: kohya's SDXL key names
(`lora_unet_input_blocks_...`), the WebUI self-test (which layer names the WebUI sees), and writing
single-file checkpoints (the toy model, test fixtures). Loading uses diffusers' own converters, so tests that
write with this module and load with diffusers cross-check both directions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
FIXED_UNET = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    mapped = RESNET_NAMES.get(head, head)
    return f"{mapped}.{tail}" if tail else mapped


class UnetLdmNames:
    """Maps diffusers U-Net module/parameter paths to the original layout, for any U-Net config."""

    def __init__(self, config: Any) -> None:
        per_block = config.layers_per_block
        if not isinstance(per_block, int):
            if len(set(per_block)) != 1:
                raise ValueError("the original layout needs the same layers_per_block in every block")
            per_block = per_block[0]
        self.per_block = per_block
        self.up_has_attention = [t.startswith("CrossAttn") for t in config.up_block_types]

    def to_ldm(self, path: str) -> str:
        """`down_blocks.1.attentions.0.proj_in` -> `input_blocks.4.1.proj_in` (works for `.weight` too)."""
        for prefix, target in FIXED_UNET.items():
            if path == prefix or path.startswith(prefix + "."):
                return target + path[len(prefix) :]
        span = self.per_block + 1
        m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)", path)
        if m:
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "downsamplers":
                return f"input_blocks.{(i + 1) * span}.0.op" + rest[len("conv") :]
            sub = f"0.{_resnet(rest)}" if kind == "resnets" else f"1.{rest}"
            return f"input_blocks.{1 + i * span + j}.{sub}"
        m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", path)
        if m:
            if m[1] == "attentions":
                return f"middle_block.1.{m[3]}"
            return f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}"
        m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)", path)
        if m:
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "upsamplers":
                slot = 2 if self.up_has_attention[i] else 1
                return f"output_blocks.{i * span + self.per_block}.{slot}.{rest}"
            sub = f"0.{_resnet(rest)}" if kind == "resnets" else f"1.{rest}"
            return f"output_blocks.{i * span + j}.{sub}"
        raise KeyError(f"no original-layout name for U-Net path {path}")


# --- VAE ---------------------------------------------------------------------------------------------------------
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(key: str, num_up_blocks: int) -> str:
    """diffusers AutoencoderKL parameter name -> original `first_stage_model` name (without the prefix)."""
    key = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
    m = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        if m[2] == "resnets":
            return f"{m[1]}.mid.block_{int(m[3]) + 1}.{m[4]}"
        rest = m[4]
        for old, new in VAE_ATTENTION.items():
            if rest.startswith(old + "."):
                rest = new + rest[len(old) :]
        return f"{m[1]}.mid.attn_1.{rest}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.+)", key)
    if m:
        if m[2] == "downsamplers":
            return f"encoder.down.{m[1]}.downsample.{m[4]}"
        return f"encoder.down.{m[1]}.block.{m[3]}.{m[4]}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)", key)
    if m:
        level = num_up_blocks - 1 - int(m[1])
        if m[2] == "upsamplers":
            return f"decoder.up.{level}.upsample.{m[4]}"
        return f"decoder.up.{level}.block.{m[3]}.{m[4]}"
    return key


# --- text encoders -----------------------------------------------------------------------------------------------
def _text_path(key: str) -> str:
    """transformers 4 and 5 spell CLIP paths with or without `text_model.`; return it without."""
    return key[len("text_model.") :] if key.startswith("text_model.") else key


def openclip_state(te: nn.Module) -> dict[str, torch.Tensor]:
    """An HF CLIPTextModel(WithProjection) state dict in OpenCLIP layout (SD2 / SDXL te2), fused q/k/v."""
    sd = {_text_path(k): v for k, v in te.state_dict().items()}
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
    }
    if "text_projection.weight" in sd:
        out["text_projection"] = sd["text_projection.weight"].T.contiguous()
    layers = te.config.num_hidden_layers
    for i in range(layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = torch.cat(
                [sd[src + f"self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")]
            )
            out[dst + f"attn.out_proj.{part}"] = sd[src + f"self_attn.out_proj.{part}"]
            out[dst + f"ln_1.{part}"] = sd[src + f"layer_norm1.{part}"]
            out[dst + f"ln_2.{part}"] = sd[src + f"layer_norm2.{part}"]
            out[dst + f"mlp.c_fc.{part}"] = sd[src + f"mlp.fc1.{part}"]
            out[dst + f"mlp.c_proj.{part}"] = sd[src + f"mlp.fc2.{part}"]
    return out


def clip_l_state(te: nn.Module) -> dict[str, torch.Tensor]:
    """An HF CLIPTextModel state dict as the original checkpoints store it (`text_model.` prefixed)."""
    return {"text_model." + _text_path(k): v for k, v in te.state_dict().items() if "position_ids" not in k}


# --- whole checkpoints and the WebUI's view of them ----------------------------------------------------------------
def original_state_dict(base: Any) -> dict[str, torch.Tensor]:
    """The whole model (U-Net, VAE, text encoders) in the original single-file layout."""
    names = UnetLdmNames(base.denoiser.config)
    out = {f"model.diffusion_model.{names.to_ldm(k)}": v for k, v in base.denoiser.state_dict().items()}
    n_up = len(base.vae.config.block_out_channels)
    for k, v in base.vae.state_dict().items():
        ldm = vae_to_ldm(k, n_up)
        if ".mid.attn_1." in ldm and ldm.endswith("weight") and v.dim() == 2:
            v = v[:, :, None, None]  # the original VAE attention uses 1x1 convs
        out[f"first_stage_model.{ldm}"] = v
    for (prefix, layout), te in zip(base.family.text_layouts, base.text_encoders):
        state = openclip_state(te) if layout == "openclip" else clip_l_state(te)
        out.update({prefix + k: v for k, v in state.items()})
    return out


def save_single_file(base: Any, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write `base` as a single-file original-layout .safetensors (atomically)."""
    from safetensors.torch import save

    from ....fileio import atomic_write_bytes

    tensors = {k: v.detach().contiguous().cpu() for k, v in original_state_dict(base).items()}
    # not safetensors' save_file: it leaves a 0600 file that a host running as another user cannot read
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def _layers(root: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, module in root.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            yield name, module


def original_layout_shapes(base: Any) -> dict[str, tuple[int, ...]]:
    """Layer name (as AUTOMATIC1111 names it, dots as `_`) -> weight shape, for every Linear/Conv layer.

    OpenCLIP attention appears as one `..._attn` entry of shape (3d, d): the WebUI patches the fused
    MultiheadAttention `in_proj_weight` with q/k/v deltas.
    """
    names = UnetLdmNames(base.denoiser.config)
    shapes: dict[str, tuple[int, ...]] = {}
    for path, module in _layers(base.denoiser):
        shapes["diffusion_model_" + names.to_ldm(path).replace(".", "_")] = tuple(module.weight.shape)
    layouts = base.family.text_layouts
    for index, ((_, layout), te) in enumerate(zip(layouts, base.text_encoders)):
        head = f"{index}_" if len(layouts) > 1 else ""  # the WebUI numbers the encoders of two-encoder models
        if layout == "clip_l":
            for path, module in _layers(te):
                shapes[f"{head}transformer_text_model_{_text_path(path).replace('.', '_')}"] = tuple(
                    module.weight.shape
                )
            continue
        for key, tensor in openclip_state(te).items():
            if key.endswith("in_proj_weight"):
                shapes[head + "model_" + key[: -len(".in_proj_weight")].replace(".", "_")] = tuple(
                    tensor.shape
                )
            elif key.endswith(".weight") and tensor.dim() == 2 and ("mlp" in key or "out_proj" in key):
                shapes[head + "model_" + key[: -len(".weight")].replace(".", "_")] = tuple(tensor.shape)
    return shapes
