"""Finding what a Z-Image transformer file does not hold: the FLUX VAE and Qwen3 text-encoder files (the shared
part_files.py rules: the config's file, beside the transformer, ComfyUI's folders) and the Qwen3 tokenizer, found
offline: `tokenizer_path`, a tokenizer folder beside the transformer or the text encoder, a host's copy under a
tokenizer root (ComfyUI's `comfy/text_encoders/qwen25_tokenizer`), the Hugging Face cache.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ....errors import ModelError
from ...tokenizers_find import find_tokenizer_folder
from ..part_files import PartFile, find_part_file

logger = logging.getLogger(__name__)

PARTS = {
    "vae": PartFile("vae", "VAE (ae.safetensors)", ("ae.safetensors", "flux_vae.safetensors"), ("vae",)),
    "text_encoder": PartFile(
        "text_encoder",
        "Qwen3-4B text encoder (qwen_3_4b.safetensors)",
        ("qwen_3_4b.safetensors", "qwen3_4b.safetensors", "qwen_3_4b_bf16.safetensors"),
        ("text_encoders", "clip"),
    ),
}
TOKENIZER_FOLDERS = ("qwen_tokenizer", "qwen3_tokenizer", "tokenizer")
HUB_TOKENIZERS = (
    ("Tongyi-MAI/Z-Image-Turbo", "tokenizer/tokenizer.json"),
    ("Qwen/Qwen3-4B", "tokenizer.json"),
)
# under a host's tokenizer root: ComfyUI's `comfy/` keeps the Qwen2/3 vocabulary its Z-Image loader uses
BUNDLED_TOKENIZERS = ("text_encoders/qwen25_tokenizer", "Tongyi-MAI/Z-Image-Turbo/tokenizer")
# Qwen3's chat template for one user turn and the generation prompt: what ZImagePipeline's apply_chat_template
# (enable_thinking=True) and ComfyUI's ZImageTokenizer (its literal llama_template) both produce, for tokenizer
# copies that carry no template (ComfyUI's)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def find_part(part: str, given: str | None, transformer: Path) -> Path:
    return find_part_file(PARTS[part], given, transformer, "Z-Image")


def _is_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()


def find_qwen_tokenizer(tokenizer_path: str | None, files: list[Path]) -> Any:
    """The Qwen3 tokenizer (with a chat template) for the transformer / text-encoder `files`: `tokenizer_path`,
    a tokenizer folder beside them, a host's copy under a tokenizer root (tokenizers_find), the Hugging Face
    cache; ModelError naming where it looked."""
    from transformers import AutoTokenizer

    if tokenizer_path:
        if not _is_tokenizer(Path(tokenizer_path)):
            raise ModelError(
                f"tokenizer_path {tokenizer_path} has no tokenizer.json or vocab.json (a Qwen3 tokenizer)."
            )
        return with_chat_template(AutoTokenizer.from_pretrained(tokenizer_path))
    near = [file.parent / name for file in files for name in TOKENIZER_FOLDERS]
    search = find_tokenizer_folder(near, BUNDLED_TOKENIZERS, _is_tokenizer, HUB_TOKENIZERS)
    if search.folder is not None:
        return with_chat_template(AutoTokenizer.from_pretrained(str(search.folder)))
    raise ModelError(
        f"no Qwen3 tokenizer found for {files[0].name} (looked in {search.where()}). Set `tokenizer_path` to a "
        "folder with the Qwen3 tokenizer files (tokenizer.json), e.g. the `tokenizer` folder of "
        "Tongyi-MAI/Z-Image-Turbo, or add the folder where your host keeps its tokenizers to `tokenizer_roots`."
    )


def with_chat_template(tokenizer: Any) -> Any:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
