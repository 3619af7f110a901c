"""Finding what a Z-Image transformer file does not hold: the FLUX VAE and Qwen3 text-encoder files (the shared
part_files.py rules: the config's file, beside the transformer, ComfyUI's folders) and the Qwen3 tokenizer, found
offline: `tokenizer_path`, a tokenizer folder beside the transformer or the text encoder, ComfyUI's own copy
(`comfy/text_encoders/qwen25_tokenizer`, the Qwen2/3 vocabulary its Z-Image loader uses), the Hugging Face cache.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from ....errors import ModelError
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
HUB_TOKENIZERS = (("Tongyi-MAI/Z-Image-Turbo", "tokenizer/"), ("Qwen/Qwen3-4B", ""))
# Qwen3's chat template for one user turn and the generation prompt: what ZImagePipeline's apply_chat_template
# (enable_thinking=True) and ComfyUI's ZImageTokenizer (its literal llama_template) both produce, for tokenizer
# copies that carry no template (ComfyUI's)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def find_part(part: str, given: str | None, transformer: Path) -> Path:
    return find_part_file(PARTS[part], given, transformer, "Z-Image")


def _candidates(tokenizer_path: str | None, files: list[Path]) -> list[Path]:
    if tokenizer_path:
        return [Path(tokenizer_path)]
    found = [file.parent / name for file in files for name in TOKENIZER_FOLDERS]
    spec = importlib.util.find_spec("comfy")
    if spec is not None and spec.submodule_search_locations:
        found.append(Path(next(iter(spec.submodule_search_locations))) / "text_encoders" / "qwen25_tokenizer")
    return found


def _is_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()


def _from_hub_cache() -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for repo, sub in HUB_TOKENIZERS:
        hit = try_to_load_from_cache(repo, f"{sub}tokenizer.json")
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def find_qwen_tokenizer(tokenizer_path: str | None, files: list[Path]) -> Any:
    """The Qwen3 tokenizer (with a chat template) for the transformer / text-encoder `files`; ModelError naming
    where it looked."""
    from transformers import AutoTokenizer

    folders = _candidates(tokenizer_path, files)
    for folder in folders:
        if _is_tokenizer(folder):
            logger.info("Qwen3 tokenizer: %s", folder)
            return with_chat_template(AutoTokenizer.from_pretrained(str(folder)))
        if tokenizer_path:
            raise ModelError(
                f"tokenizer_path {folder} has no tokenizer.json or vocab.json (a Qwen3 tokenizer)."
            )
    cached = _from_hub_cache()
    if cached is not None:
        return with_chat_template(AutoTokenizer.from_pretrained(str(cached)))
    raise ModelError(
        f"no Qwen3 tokenizer found for {files[0].name} (looked in {', '.join(str(f) for f in folders)} and the "
        f"Hugging Face cache of {HUB_TOKENIZERS[0][0]}). Set `tokenizer_path` to a folder with the Qwen3 "
        "tokenizer files (tokenizer.json), e.g. the `tokenizer` folder of Tongyi-MAI/Z-Image-Turbo."
    )


def with_chat_template(tokenizer: Any) -> Any:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
