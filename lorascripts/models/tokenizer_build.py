"""Train small tokenizers from text, for the toy models and test fixtures: CLIP's BPE and T5's Unigram.

Both are learned by the `tokenizers` library. The CLIP one is written in the two-file CLIP layout (`vocab.json`,
`merges.txt`) that `transformers.CLIPTokenizer` and ComfyUI's tokenizer read, which no library exports directly;
the T5 one is a sentencepiece-style Unigram model saved by `transformers.T5TokenizerFast` (`tokenizer.json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

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


def train_t5_tokenizer(texts: Iterable[str], out_dir: Path) -> Path:
    """A sentencepiece-style Unigram tokenizer of the words in `texts` (NFKC, Metaspace, `</s>` appended, as T5's),
    saved as a T5TokenizerFast folder; returns `out_dir`.

    The pieces are the words with their log frequencies, and every character as a fallback: on a closed vocabulary
    that is what Unigram training converges to, and tokenizers' UnigramTrainer (0.23) returns an almost
    character-level vocabulary (57 pieces whatever `vocab_size`) on the toy captions, which would make the
    toy's captions three times as long in T5 tokens.
    """
    import math
    from collections import Counter

    from transformers import T5TokenizerFast

    words = Counter(f"\u2581{w}" for text in texts for w in text.split())
    chars = sorted({c for w in words for c in w})
    total = sum(words.values())
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]  # T5's ids 0, 1, 2
    pieces = [(w, math.log(n / total)) for w, n in sorted(words.items())]
    pieces += [(c, math.log(0.5 / total)) for c in chars if c not in words]
    tokenizer = Tokenizer(models.Unigram(specials + pieces, unk_id=2))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )
    fast.save_pretrained(str(out_dir))
    return out_dir
