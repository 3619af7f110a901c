"""Our FLUX.1 LoRA file in a real ComfyUI 0.3.75 (HOSTS.md): a transformer of FLUX.1's own width (24 heads of 128,
1 double + 1 single block, random bf16 weights) in BFL's layout in models/diffusion_models, which ComfyUI detects
as FLUX; a LoRA built by our engine on that model and saved through the trainer's own path
(`family.lora_file_tensors` + `save_lora_file`); `UNETLoader` -> `LoraLoaderModelOnly` -> `ModelSave`. Every key
must be applied: no `lora key not loaded` in the server's log, and the saved (patched) weights of every targeted
layer differ from the file's by exactly the LoRA's update, untargeted ones unchanged.

One model, one test (about 1 GB on disk in bf16, a few GB of RAM in the server)."""

from __future__ import annotations

import gc
from pathlib import Path

import torch
from comfy_host import lora_model_save
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_flux import bfl_transformer

WIDTH, HEAD = 3072, 128
MODEL, LORA = "flux1-width.safetensors", "flux1-width-lora.safetensors"


def _write_model_and_lora(base: Path) -> tuple[Path, Path]:
    """The BFL file in ComfyUI's folders and our LoRA for it, written as the trainer writes its final file."""
    from lorascripts.models.families import BaseModel, get_family
    from lorascripts.models.families.flux1.load import load_transformer
    from lorascripts.network.lora import LoraNetwork, NetworkSpec
    from lorascripts.network.save import save_lora_file

    model_path = base / "models" / "diffusion_models" / MODEL
    model_path.parent.mkdir(parents=True, exist_ok=True)
    state = bfl_transformer(0, guidance=True, hidden=WIDTH, head_dim=HEAD, dtype=torch.bfloat16)
    save_file(state, str(model_path))
    family = get_family("flux1")
    transformer = load_transformer(state, model_path, torch.bfloat16)
    del state
    base_model = BaseModel(
        family, transformer, None, [], [], None, "flow", str(model_path), "flux-width", 1024
    )
    network = LoraNetwork.create(
        base_model,
        NetworkSpec(rank=4, alpha=4.0, target_modules=["all", "modulation"], train_text_encoder=False),
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in network.lora_modules.values():
            module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape, generator=gen))
    tensors = family.lora_file_tensors(base_model, network.kohya_state_dict())
    metadata = {
        **family.lora_metadata(v_prediction=False, resolution=1024),
        **family.model_metadata(base_model),
    }
    lora_path = save_lora_file(base / "models" / "loras" / LORA, tensors, metadata, dtype=torch.bfloat16)
    del transformer, network, tensors
    gc.collect()
    return model_path, lora_path


def _expected_deltas(lora: Path) -> dict[str, torch.Tensor]:
    """kohya's rule per module: up @ down * alpha / rank, keyed by the BFL weight it changes."""
    out = {}
    with safe_open(str(lora), "pt") as f:
        modules = {k.split(".", 1)[0] for k in f.keys()}
        for module in sorted(modules):
            down = f.get_tensor(f"{module}.lora_down.weight").float()
            up = f.get_tensor(f"{module}.lora_up.weight").float()
            alpha = f.get_tensor(f"{module}.alpha").item()
            name = module.removeprefix("lora_unet_")
            for block in ("double_blocks", "single_blocks"):
                name = name.replace(f"{block}_0_", f"{block}.0.")
            layer = name.replace("img_attn_", "img_attn.").replace("txt_attn_", "txt_attn.")
            layer = layer.replace("_mod_lin", "_mod.lin").replace("modulation_lin", "modulation.lin")
            layer = layer.replace("img_mlp_", "img_mlp.").replace("txt_mlp_", "txt_mlp.")
            out[f"{layer}.weight"] = up @ down * (alpha / down.shape[0])
    return out


def test_comfyui_applies_every_key_of_our_flux_lora(tmp_path: Path) -> None:
    model_path, lora_path = _write_model_and_lora(tmp_path)
    expected = _expected_deltas(lora_path)
    # every block layer kohya names, the single block's fused linear1 among them
    assert {"single_blocks.0.linear1.weight", "double_blocks.0.txt_attn.qkv.weight"} <= set(expected)
    assert len(expected) == 13, sorted(expected)  # 10 double-block layers, 3 single-block ones
    saved = lora_model_save(tmp_path, MODEL, LORA, "patched/flux")
    with safe_open(str(model_path), "pt") as before, safe_open(str(saved), "pt") as after:
        prefix = (
            "model.diffusion_model."
            if any(k.startswith("model.diffusion_model.") for k in after.keys())
            else ""
        )
        for layer, delta in expected.items():
            change = after.get_tensor(prefix + layer).float() - before.get_tensor(layer).float()
            err = (change - delta).norm() / delta.norm()
            assert delta.norm() > 0 and err < 0.05, (
                f"{layer}: ComfyUI's update differs from the file's by {err:.3f}"
            )
        untouched = (
            after.get_tensor(prefix + "img_in.weight").float() - before.get_tensor("img_in.weight").float()
        )
        assert untouched.abs().max() == 0, "a layer without LoRA changed"
