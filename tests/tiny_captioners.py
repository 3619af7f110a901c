"""Tiny, randomly initialised captioning models built from configs, saved like the real ones on the Hub.

BLIP (BERT WordPiece tokenizer trained here with `tokenizers`), Florence-2 (BART BPE tokenizer trained here) and
a WD14-shaped ONNX tagger (NHWC 448x448 BGR input, sigmoid output per row of selected_tags.csv).
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

WORDS = "a photo of red green blue circle square cat dog house tree on the white background painting style".split()


def _wordpiece_vocab(folder: Path) -> Path:
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(
        [" ".join(WORDS)] * 20,
        vocab_size=200,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(folder))
    return folder / "vocab.txt"


def build_tiny_blip(folder: Path) -> Path:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = _wordpiece_vocab(folder / "_vocab")
    tokenizer = BertTokenizer(str(vocab), bos_token="[DEC]")
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    ids = tokenizer.convert_tokens_to_ids
    config = BlipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            encoder_hidden_size=32,
            bos_token_id=ids("[DEC]"),
            eos_token_id=ids("[SEP]"),
            sep_token_id=ids("[SEP]"),
            pad_token_id=ids("[PAD]"),
        ),
        projection_dim=32,
        image_text_hidden_size=32,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).eval()
    # an EOS-suppressing bias would be a hack; instead make [SEP] unlikely so captions are never empty
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[ids("[SEP]")] = -20.0
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def build_tiny_wd14(folder: Path, size: int = 448) -> tuple[Path, list[str]]:
    """An ONNX graph with the WD14 signature; tag i fires when the mean of colour channel i%3 is high."""
    import onnx
    from onnx import TensorProto, helper

    names = [
        "rating:general",
        "rating:explicit",
        "red_theme",
        "green_theme",
        "blue_theme",
        "hatsune_miku",
        "^_^",
    ]
    categories = [9, 9, 0, 0, 0, 4, 0]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (n, c) in enumerate(zip(names, categories)):
            writer.writerow([i, n, c, 100])
    # mean over H, W -> (N, 3) BGR in 0..255; logits = mean @ W + b
    weights = torch.zeros(3, len(names))
    weights[2, 2] = weights[1, 3] = weights[0, 4] = 0.05  # BGR order: channel 2 is red
    bias = torch.tensor([2.0, -4.0, -6.0, -6.0, -6.0, -9.0, -9.0])
    nodes = [
        helper.make_node("ReduceMean", ["input_1", "axes"], ["mean"], keepdims=0),
        helper.make_node("MatMul", ["mean", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", len(names)])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
            helper.make_tensor("W", TensorProto.FLOAT, list(weights.shape), weights.flatten().tolist()),
            helper.make_tensor("b", TensorProto.FLOAT, [len(names)], bias.tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    return folder, names


def build_tiny_florence(folder: Path) -> Path:
    """Florence-2 (DaViT vision + BART text) at toy sizes, with a byte-level BPE tokenizer trained here."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    prompts = "what does the image describe in detail shown with a paragraph"
    bpe.train_from_iterator(
        [" ".join(WORDS) + " " + prompts] * 20,
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(folder))
    tok = BartTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        extra_special_tokens={"image_token": "<image>"},
    )
    # 32px -> patch stride 4 then 2: 4x4 = 16 patch features + 1 pooled token
    images = CLIPImageProcessor(
        size={"height": 32, "width": 32},
        crop_size={"height": 32, "width": 32},
        do_center_crop=False,
        image_seq_length=17,
    )
    processor = Florence2Processor(image_processor=images, tokenizer=tok)
    config = Florence2Config(
        vision_config=dict(
            depths=[1, 1],
            embed_dim=[16, 32],
            num_heads=[2, 4],
            num_groups=[2, 4],
            patch_size=[7, 3],
            patch_stride=[4, 2],
            patch_padding=[3, 1],
            patch_prenorm=[False, True],
            window_size=2,
            projection_dim=32,
            max_position_embeddings=16,
            max_temporal_embeddings=4,
        ),
        text_config=dict(
            vocab_size=len(tok),
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.eos_token_id,
        ),
        image_token_id=tok.image_token_id,
    )
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(config).eval()
    model.generation_config.min_new_tokens = 4  # random weights: never an empty caption
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder
