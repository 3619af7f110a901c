"""A tiny but architecturally real Z-Image: the single-stream transformer (dim 64, 2 heads, 2 layers, 1 noise and
1 context refiner), a 2-layer Qwen3 text encoder with a byte-level BPE tokenizer trained here, and FLUX's
16-channel VAE (tiny_flux's), saved the ways users have them:

- ComfyUI's folders: `models/diffusion_models/z_image_tiny.safetensors` in the original Z-Image key layout (fused
  `attention.qkv`, `attention.out`, `x_embedder`, `final_layer`; what ComfyUI and the Tongyi release ship), also
  as an fp8 e4m3fn file; `models/text_encoders/qwen_3_4b.safetensors` keyed as ComfyUI's (`model.layers.N...`,
  the Hugging Face Qwen3 names under `model.`); `models/vae/ae.safetensors` (BFL's layout);
- a diffusers `ZImagePipeline` folder holding the same weights.

The diffusers transformer is the source (random weights from its own initialisation); the original-layout file is
made from it by `original_state` and checked to come back identical through diffusers' own converter
(`convert_z_image_transformer_checkpoint_to_diffusers`), so both forms hold the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tiny_flux import ae_state, tiny_vae

DIM, HEADS, LAYERS, REFINERS, TEXT, LATENT = 64, 2, 2, 1, 32, 16
AXES = (8, 12, 12)  # rope axes; their sum is the head size (64 / 2), as Z-Image's (32, 48, 48) is 3840 / 30
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # Qwen's: pad, chat turn start, turn end (eos)
# Qwen3's chat template for one user turn with the generation prompt, which ZImagePipeline applies to each prompt
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = "a an the red green blue yellow circle square shape small large on in of with picture zkstyle".split()
# diffusers name -> original Z-Image name, the inverse of the renames in diffusers' converter and ComfyUI's
# `z_image_to_diffusers`; q/k/v are fused separately (neither library exports this direction)
_RENAMES = (
    ("all_final_layer.2-1.", "final_layer."),
    ("all_x_embedder.2-1.", "x_embedder."),
    (".attention.to_out.0.", ".attention.out."),
    (".attention.norm_q.", ".attention.q_norm."),
    (".attention.norm_k.", ".attention.k_norm."),
)


@dataclass(frozen=True)
class TinyZImage:
    root: Path
    transformer: Path  # original layout, bf16 (models/diffusion_models)
    transformer_fp8: Path  # the same, 2-D weights in float8_e4m3fn
    text_encoder: Path  # qwen_3_4b.safetensors layout (models/text_encoders)
    vae: Path  # ae.safetensors (models/vae)
    tokenizer_dir: Path  # Qwen2TokenizerFast with the chat template
    diffusers_dir: Path  # ZImagePipeline folder

    @property
    def single_file(self) -> Path:  # what helpers_train.tiny_config reads
        return self.transformer


def transformer_config(dim: int = DIM, heads: int = HEADS, layers: int = LAYERS, refiners: int = REFINERS,
                       text: int = TEXT) -> dict:  # fmt: skip
    """Constructor arguments of a diffusers `ZImageTransformer2DModel`; dim 3840 with 30 heads and rope axes
    (32, 48, 48) is Z-Image's own width (what ComfyUI detects as Z-Image), else the head is split 1:1.5:1.5."""
    head = dim // heads
    axes = [32, 48, 48] if head == 128 else [head // 4, 3 * head // 8, 3 * head // 8]
    return {
        "dim": dim, "n_heads": heads, "n_kv_heads": heads, "n_layers": layers, "n_refiner_layers": refiners,
        "cap_feat_dim": text, "in_channels": LATENT, "axes_dims": axes, "axes_lens": [1024, 512, 512],
    }  # fmt: skip


def diffusers_transformer(seed: int, **sizes: int) -> torch.nn.Module:
    """A `ZImageTransformer2DModel` with random weights (its own initialisation, pad tokens randomised too so a
    wrong mapping of them shows); `sizes` are `transformer_config`'s arguments."""
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(seed)
    model = ZImageTransformer2DModel(**transformer_config(**sizes))
    with torch.no_grad():
        for name in ("x_pad_token", "cap_pad_token"):
            getattr(model, name).normal_(std=0.02)
    return model.eval()


def original_state(diffusers_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers Z-Image transformer state dict in the original layout ComfyUI loads: q/k/v concatenated into
    `attention.qkv` (in that order, as both converters split it), the other renames of `_RENAMES` reversed."""
    out: dict[str, torch.Tensor] = {}
    for key, value in diffusers_state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            parts = [diffusers_state[key.replace(".to_q.", f".to_{p}.")] for p in "qkv"]
            out[key.replace(".attention.to_q.", ".attention.qkv.")] = torch.cat(parts)
            continue
        for new, old in _RENAMES:
            key = key.replace(new, old)
        out[key] = value
    return out


def to_diffusers(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original layout back to diffusers' names through diffusers' own converter (which pops its input)."""
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    return convert_z_image_transformer_checkpoint_to_diffusers(dict(original))


def fp8_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fp8 e4m3fn file users download: matrices in float8, norms, biases and pad tokens in bf16."""
    return {
        k: v.to(torch.float8_e4m3fn) if v.dim() == 2 and k.endswith(".weight") else v.to(torch.bfloat16)
        for k, v in state.items()
    }


def build_qwen_tokenizer(folder: Path) -> Path:
    """A byte-level BPE tokenizer (Qwen2's kind) trained on the test words, with Qwen's special tokens and chat
    template, saved as `Qwen2TokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    texts = [" ".join(WORDS)] * 4 + [f"a {w} picture" for w in WORDS] + ["user assistant"] * 2
    tok.train_from_iterator(texts, trainer)
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok, pad_token=SPECIALS[0], eos_token=SPECIALS[2], unk_token=None, bos_token=None,
        additional_special_tokens=list(SPECIALS[1:]),
    )  # fmt: skip
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(folder))
    return folder


def qwen3_encoder(vocab: int, seed: int, hidden: int = TEXT) -> torch.nn.Module:
    """A 2-layer `Qwen3Model` (Qwen3-4B's structure: q/k norms, grouped KV heads, tied embeddings)."""
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
        tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=1000000.0,
    )  # fmt: skip
    return Qwen3Model(config).eval()


def comfy_text_encoder_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A `Qwen3Model` keyed as ComfyUI's `qwen_3_4b.safetensors` (`model.` + Hugging Face names; ComfyUI detects
    it by `model.layers.0.self_attn.q_norm.weight`)."""
    return {f"model.{k}": v for k, v in encoder.state_dict().items()}


def save_state(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def build_tiny_zimage(root: Path, seed: int = 0, dim: int = DIM, heads: int = HEADS) -> TinyZImage:
    """Build and save the tiny Z-Image in ComfyUI's folders and as a diffusers `ZImagePipeline` folder (`dim`,
    `heads`: the transformer's width and head count; the benchmark's is wider, with Z-Image's heads of 128)."""
    from transformers import Qwen2TokenizerFast

    models = root / "models"
    tokenizer_dir = build_qwen_tokenizer(root / "qwen_tokenizer")
    tokenizer = Qwen2TokenizerFast.from_pretrained(str(tokenizer_dir))
    transformer = diffusers_transformer(seed, dim=dim, heads=heads)
    encoder, vae = qwen3_encoder(len(tokenizer), seed + 1), tiny_vae(seed + 2)
    original = {k: v.to(torch.bfloat16) for k, v in original_state(transformer.state_dict()).items()}
    files = {
        "transformer": save_state(original, models / "diffusion_models" / "z_image_tiny.safetensors"),
        "transformer_fp8": save_state(
            fp8_state(original), models / "diffusion_models" / "z_image_tiny_fp8_e4m3fn.safetensors"
        ),
        "text_encoder": save_state(
            comfy_text_encoder_state(encoder), models / "text_encoders" / "qwen_3_4b.safetensors"
        ),
        "vae": save_state(ae_state(vae), models / "vae" / "ae.safetensors"),
    }
    folder = _diffusers_folder(root / "z_image_tiny-diffusers", transformer, vae, encoder, tokenizer)
    return TinyZImage(root, tokenizer_dir=tokenizer_dir, diffusers_dir=folder, **files)


def scheduler_config() -> dict:
    """Z-Image's published scheduler: flow matching with a fixed shift of 3 (ComfyUI's ZImage uses 3.0 too)."""
    return {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}


def _diffusers_folder(folder, transformer, vae, encoder, tokenizer) -> Path:  # noqa: ANN001
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**scheduler_config()),
        vae=vae, text_encoder=encoder, tokenizer=tokenizer, transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(str(folder))
    return folder
