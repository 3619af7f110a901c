"""A tiny but architecturally real FLUX.1: transformer (1 double + 1 single block, hidden 64), 16-channel VAE,
CLIP-L and T5 encoders and their tokenizers, all built locally, saved the ways users have them:

- BFL's layout: `flux1-tiny.safetensors` (transformer only) + `ae.safetensors`, `clip_l.safetensors`,
  `t5xxl_fp16.safetensors` (ComfyUI's models/ folders or side by side);
- ComfyUI's all-in-one checkpoint (`model.diffusion_model.`, `text_encoders.*.transformer.`, `vae.`);
- a diffusers FluxPipeline folder.

The BFL transformer file is the source: random weights in BFL's key layout; the diffusers folder is made from it
with diffusers' converter, so both forms hold the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from lorascripts.models.families.flux1 import save
from lorascripts.models.families.flux1.save import ae_state, clip_l_state, t5_state
from lorascripts.models.tokenizer_build import train_t5_tokenizer

HIDDEN, HEAD_DIM, TEXT, POOLED, LATENT = 64, 32, 32, 32, 16
WORDS = "a an the red green blue yellow circle square shape small large on in of with picture zkstyle".split()


@dataclass(frozen=True)
class TinyFlux:
    root: Path
    transformer: Path  # BFL layout, transformer only (models/diffusion_models)
    all_in_one: Path
    diffusers_dir: Path
    tokenizer_dir: Path  # CLIP tokenizer

    @property
    def single_file(self) -> Path:  # what helpers_train.tiny_config reads
        return self.transformer


def bfl_shapes(
    guidance: bool = True,
    hidden: int = HIDDEN,
    head_dim: int = HEAD_DIM,
    doubles: int = 1,
    singles: int = 1,
    text: tuple[int, int] = (TEXT, POOLED),
) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the tiny FLUX transformer in BFL's key layout (the package's `bfl_shapes` with the test
    widths)."""
    return save.bfl_shapes(guidance, hidden, head_dim, doubles, singles, text, LATENT)


def bfl_transformer(
    seed: int,
    guidance: bool = True,
    hidden: int = HIDDEN,
    head_dim: int = HEAD_DIM,
    dtype: torch.dtype = torch.float32,
    doubles: int = 1,
    singles: int = 1,
) -> dict[str, torch.Tensor]:
    """Random weights of a FLUX transformer in BFL's key layout (see `bfl_shapes`)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in bfl_shapes(guidance, hidden, head_dim, doubles, singles).items():
        if name.endswith(".scale"):
            state[name] = torch.ones(shape, dtype=dtype)
        elif name.endswith(".weight"):
            state[name] = (torch.randn(shape, generator=gen) * shape[1] ** -0.5).to(dtype)
        else:
            state[name] = (torch.randn(shape, generator=gen) * 0.02).to(dtype)
    return state


def transformer_runner(seed: int = 2) -> Callable[[torch.nn.Module], torch.Tensor]:
    """A function running a FLUX transformer (text width 32) on fixed random inputs, without gradients."""
    from lorascripts.models.families.flux1.predict import predict

    gen = torch.Generator().manual_seed(seed)
    cond = {"hidden": torch.randn(1, 8, TEXT, generator=gen), "pooled": torch.randn(1, POOLED, generator=gen)}
    noisy = torch.randn(1, LATENT, 4, 4, generator=gen)

    def run(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return predict(model, noisy, torch.tensor([0.5]), cond, 1.0).float()

    return run


def tiny_vae(seed: int) -> torch.nn.Module:
    """FLUX's VAE structure (16 latent channels, shift and scale) at 2 levels of 32 channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=LATENT,
        norm_num_groups=32,
        layers_per_block=1,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    ).eval()


def _clip(vocab: int, seed: int) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab, hidden_size=POOLED, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=vocab - 2, eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )  # fmt: skip
    return CLIPTextModel(config).eval()


def _t5(vocab: int, seed: int) -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab, d_model=TEXT, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
    )  # fmt: skip
    return T5EncoderModel(config).eval()


def build_t5_tokenizer(folder: Path) -> Path:
    """A sentencepiece-style Unigram tokenizer trained on the test vocabulary, saved as T5TokenizerFast."""
    return train_t5_tokenizer([" ".join(WORDS)], folder)


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def build_tiny_flux(
    root: Path,
    clip_tokenizer_dir: Path,
    seed: int = 0,
    guidance: bool = True,
    hidden: int = HIDDEN,
    head_dim: int = HEAD_DIM,
    t5_tokenizer_dir: Path | None = None,
) -> TinyFlux:
    """Build and save the tiny FLUX in ComfyUI's folders, as an all-in-one file and as a diffusers folder
    (`hidden`, `head_dim`: the transformer's width and head size; the benchmark's is wider, FLUX.1's heads).
    The T5 tokenizer is trained here and saved beside the transformer and the all-in-one file, unless
    `t5_tokenizer_dir` gives one (a host's own copy): then the encoder takes its vocabulary and none is saved."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    models = root / "models"
    clip_tok = CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir))
    name = "flux1-tiny" if guidance else "flux1-tiny-schnell"
    t5_tok_dir = t5_tokenizer_dir or build_t5_tokenizer(models / "diffusion_models" / "t5_tokenizer")
    t5_tok = T5TokenizerFast.from_pretrained(str(t5_tok_dir))
    transformer = bfl_transformer(seed, guidance, hidden, head_dim)
    vae, clip, t5 = tiny_vae(seed + 1), _clip(len(clip_tok), seed + 2), _t5(len(t5_tok), seed + 3)
    parts = {
        "vae": ae_state(vae),
        "clip_l": clip_l_state(clip),
        "t5": t5_state(t5),
    }
    single = _save(transformer, models / "diffusion_models" / f"{name}.safetensors")
    _save(parts["vae"], models / "vae" / "ae.safetensors")
    _save(parts["clip_l"], models / "text_encoders" / "clip_l.safetensors")
    _save(parts["t5"], models / "text_encoders" / "t5xxl_fp16.safetensors")
    prefixes = {
        "vae": "vae.",
        "clip_l": "text_encoders.clip_l.transformer.",
        "t5": "text_encoders.t5xxl.transformer.",
    }
    aio = {f"model.diffusion_model.{k}": v for k, v in transformer.items()}
    for part, state in parts.items():
        aio.update({prefixes[part] + k: v for k, v in state.items()})
    aio_path = _save(aio, models / "checkpoints" / f"{name}-aio.safetensors")
    if t5_tokenizer_dir is None:
        (models / "checkpoints" / "t5_tokenizer").mkdir(exist_ok=True)
        t5_tok.save_pretrained(str(models / "checkpoints" / "t5_tokenizer"))
    folder = _diffusers_folder(
        root / f"{name}-diffusers", transformer, vae, clip, t5, clip_tok, t5_tok, guidance
    )
    return TinyFlux(root, single, aio_path, folder, clip_tokenizer_dir)


def _diffusers_folder(folder, transformer, vae, clip, t5, clip_tok, t5_tok, guidance) -> Path:  # noqa: ANN001
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from lorascripts.models.families.flux1.layout import transformer_config
    from lorascripts.models.families.flux1.load import _convert, scheduler_config

    config = transformer_config({k: tuple(v.shape) for k, v in transformer.items()})
    model = FluxTransformer2DModel(**config)
    model.load_state_dict(_convert(transformer, config))
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**scheduler_config(model)),
        vae=vae, text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok, transformer=model,
    )  # fmt: skip
    pipe.save_pretrained(str(folder))
    return folder
