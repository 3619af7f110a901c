"""The tiny Z-Image fixture holds one model in every form: the original-layout file (what ComfyUI loads) comes
back bit-identical through diffusers' own converter, the diffusers folder holds the same weights, and the text
encoder and fp8 files are keyed and typed as the files users download."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from tiny_zimage import diffusers_transformer, original_state, to_diffusers


def test_original_layout_round_trips_through_diffusers_converter() -> None:
    state = diffusers_transformer(3).state_dict()
    original = original_state(state)
    assert "layers.0.attention.qkv.weight" in original and "x_embedder.weight" in original
    assert not any(".to_q." in k or "all_x_embedder" in k for k in original)
    back = to_diffusers(original)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_files_hold_the_same_model(tiny_zimage) -> None:
    from diffusers import ZImageTransformer2DModel

    original = load_file(str(tiny_zimage.transformer))
    folder = ZImageTransformer2DModel.from_pretrained(str(tiny_zimage.diffusers_dir / "transformer"))
    converted = to_diffusers(original)
    for key, value in folder.state_dict().items():
        assert torch.equal(converted[key].float(), value.to(torch.bfloat16).float()), key
    fp8 = load_file(str(tiny_zimage.transformer_fp8))
    assert fp8["layers.0.attention.qkv.weight"].dtype == torch.float8_e4m3fn
    assert fp8["layers.0.attention_norm1.weight"].dtype == torch.bfloat16
    encoder = load_file(str(tiny_zimage.text_encoder))
    assert "model.layers.0.self_attn.q_norm.weight" in encoder  # ComfyUI's Qwen3-4B detection key
    assert "model.layers.0.post_attention_layernorm.weight" in encoder
    assert "encoder.conv_in.weight" in load_file(str(tiny_zimage.vae))
