"""Train a small CLIP-format BPE tokenizer from text, for the toy model and test fixtures.

The BPE merges are learned by the `tokenizers` library; this file only writes them in the two-file CLIP layout
(`vocab.json`, `merges.txt`) that `transformers.CLIPTokenizer` and ComfyUI's tokenizer read, which no library
exports directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _byte_alphabet() -> list[str]:
    return sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda c: ord(c))


def train_clip_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 1000) -> Path:
    """Learn BPE merges on lower-cased `texts` and write a CLIPTokenizer folder; returns `out_dir`."""
    alphabet = _byte_alphabet()
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=alphabet, end_of_word_suffix="</w>", show_progress=False
    )
    tokenizer.train_from_iterator((t.lower() for t in texts), trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    vocab: dict[str, int] = {}
    for token in [
        *alphabet,
        *(c + "</w>" for c in alphabet),
        *(m.replace(" ", "") for m in merges),
        *SPECIALS,
    ]:
        vocab.setdefault(token, len(vocab))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": SPECIALS[0],
        "eos_token": SPECIALS[1],
        "unk_token": SPECIALS[1],
        "pad_token": SPECIALS[1],
        "do_lower_case": True,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return out_dir
