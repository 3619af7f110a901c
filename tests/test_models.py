"""Base-model loading: real-size architectures are read from shapes alone; bad files get clear errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from lorascripts.errors import ModelError
from lorascripts.models import load_base_model
from lorascripts.models.families import family_of_checkpoint, get_family
from lorascripts.models.families.sd.ldm_names import original_state_dict
from lorascripts.models.families.sd.single_file import text_config, unet_config, vae_config

SD15_UNET = dict(
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD21_UNET = {
    **SD15_UNET,
    "sample_size": 96,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}
SDXL_UNET = dict(
    sample_size=128,
    block_out_channels=(320, 640, 1280),
    cross_attention_dim=2048,
    attention_head_dim=[5, 10, 20],
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=[1, 2, 10],
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
OPENCLIP_H = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, hidden_act="gelu"
)
OPENCLIP_G = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    hidden_act="gelu",
    projection_dim=1280,
)


def _meta_base(family: str, unet_kw: dict, texts: list[dict]) -> SimpleNamespace:
    """A real-size model on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_kw)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        )
        encoders = []
        for kw in texts:
            config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **kw)
            encoders.append(
                (CLIPTextModelWithProjection if "projection_dim" in kw else CLIPTextModel)(config)
            )
    return SimpleNamespace(family=get_family(family), denoiser=unet, vae=vae, text_encoders=encoders)


def _heads(value) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@pytest.mark.parametrize(
    "family,unet_kw,texts",
    [
        ("sd1", SD15_UNET, [CLIP_L]),
        ("sd2", SD21_UNET, [OPENCLIP_H]),
        ("sdxl", SDXL_UNET, [CLIP_L, OPENCLIP_G]),
    ],
)
def test_real_architectures_are_inferred_from_shapes(family, unet_kw, texts) -> None:
    base = _meta_base(family, unet_kw, texts)
    shapes = {k: tuple(v.shape) for k, v in original_state_dict(base).items()}
    assert family_of_checkpoint(list(shapes)) is get_family(family)
    arch = {"pooled_dim": 1280} if family == "sdxl" else {}
    got = unet_config(shapes, get_family(family), arch)
    want = base.denoiser.config
    for key in (
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "up_block_types",
        "cross_attention_dim",
        "use_linear_projection",
        "sample_size",
        "in_channels",
    ):
        assert (
            tuple(got[key])
            if isinstance(got[key], list)
            else got[key] == (tuple(want[key]) if isinstance(want[key], list) else want[key])
        ), key
    heads = _heads(got["attention_head_dim"])
    assert heads == _heads(want.attention_head_dim) or heads * len(want.block_out_channels) == _heads(
        want.attention_head_dim
    ) * len(want.block_out_channels)
    if family == "sdxl":
        assert list(got["transformer_layers_per_block"]) == [1, 2, 10]
        assert got["addition_time_embed_dim"] == 256 and got["projection_class_embeddings_input_dim"] == 2816
    vae = vae_config(shapes, get_family(family), {})
    assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["layers_per_block"] == 2

    for index, ((prefix, layout), te) in enumerate(zip(get_family(family).text_layouts, base.text_encoders)):
        cfg = text_config(shapes, prefix, layout, {}, index)
        expected_layers = 23 if family == "sd2" else te.config.num_hidden_layers  # SD2 drops the last block
        assert cfg["num_hidden_layers"] == expected_layers
        assert cfg["num_attention_heads"] == te.config.num_attention_heads
        assert cfg["hidden_size"] == te.config.hidden_size and cfg["hidden_act"] == te.config.hidden_act


def test_standard_checkpoint_without_metadata_and_pickles(tiny_tokenizer, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file
    from tiny_models import build_tiny

    model = build_tiny("sd1", tmp_path / "std", tiny_tokenizer, standard=True)
    with safe_open(str(model.single_file), "pt") as fh:
        assert not fh.metadata()  # nothing but the weights, like a downloaded checkpoint
    reference = load_base_model(str(model.diffusers_dir))
    base = load_base_model(str(model.single_file), tokenizer_path=str(tiny_tokenizer))
    assert base.denoiser.config.attention_head_dim == reference.denoiser.config.attention_head_dim == 8
    assert all(
        torch.equal(v, reference.denoiser.state_dict()[k]) for k, v in base.denoiser.state_dict().items()
    )
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(model.single_file))}, ckpt)
    with pytest.raises(ModelError, match="allow_pickle"):
        load_base_model(str(ckpt), tokenizer_path=str(tiny_tokenizer))
    base = load_base_model(str(ckpt), allow_pickle=True, tokenizer_path=str(tiny_tokenizer))
    assert base.family is get_family("sd1")


def test_wrong_family_and_wrong_file_are_explained(tiny_sd2, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_base_model(
            str(tiny_sd2.single_file), tokenizer_path=str(tiny_sd2.tokenizer_dir), expected_family="sd1"
        )
    assert "SD2.x" in str(err.value) and "sd1" in str(err.value)
    lora = tmp_path / "some_lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(ModelError, match="not a FLUX.1, Stable Diffusion"):
        load_base_model(str(lora))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="not a readable"):
        load_base_model(str(broken))
    with pytest.raises(ModelError, match="does not exist"):
        load_base_model(str(tmp_path / "missing.safetensors"))


def test_missing_tokenizer_says_what_to_do(tiny_sd1, tmp_path: Path, monkeypatch) -> None:
    # offline, as the suite runs: without it the Hub download is tried and huggingface_hub retries the network
    # for ~25 s before the error (that path, against an unreachable endpoint: test_tokenizer_download.py)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lonely = tmp_path / "alone" / "model.safetensors"
    lonely.parent.mkdir()
    lonely.write_bytes(tiny_sd1.single_file.read_bytes())
    with pytest.raises(ModelError, match="tokenizer_path"):
        load_base_model(str(lonely))


def test_single_file_and_diffusers_folder_agree(tiny_sdxl) -> None:
    a = load_base_model(str(tiny_sdxl.single_file), tokenizer_path=str(tiny_sdxl.tokenizer_dir))
    b = load_base_model(str(tiny_sdxl.diffusers_dir))
    assert a.family is b.family is get_family("sdxl") and a.resolution == b.resolution
    for x, y in zip([a.denoiser, a.vae, *a.text_encoders], [b.denoiser, b.vae, *b.text_encoders]):
        sx, sy = x.state_dict(), y.state_dict()
        assert sx.keys() == sy.keys() and all(torch.equal(sx[k], sy[k]) for k in sx)
    ids = [
        t(["a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        for t in a.tokenizers
    ]
    from lorascripts.models.families.sd.text import encode_tokens

    with torch.no_grad():
        ha, pa = encode_tokens(a, ids)
        hb, pb = encode_tokens(b, ids)
    assert (
        torch.equal(ha, hb) and torch.equal(pa, pb) and ha.shape[-1] == a.denoiser.config.cross_attention_dim
    )
