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


# Florence-2 at toy sizes: DaViT vision tower of two stages, one-layer BART encoder and decoder
FLORENCE_VISION = dict(
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
)
FLORENCE_TEXT = dict(
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_position_embeddings=128,
)


def _bart_tokenizer(folder: Path):  # noqa: ANN202 - transformers' BartTokenizer, imported lazily
    """A byte-level BPE tokenizer trained here on the captions' and task prompts' words, as BART's."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartTokenizer

    bpe = ByteLevelBPETokenizer()
    prompts = "what does the image describe in detail shown with a paragraph"
    bpe.train_from_iterator(
        [" ".join(WORDS) + " " + prompts] * 20,
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(folder))
    return BartTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        extra_special_tokens={"image_token": "<image>"},
    )


def build_tiny_florence(folder: Path) -> Path:
    """Florence-2 (DaViT vision + BART text) at toy sizes, with a byte-level BPE tokenizer trained here."""
    from transformers import (
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    tok = _bart_tokenizer(folder)
    # 32px -> patch stride 4 then 2: 4x4 = 16 patch features + 1 pooled token
    images = CLIPImageProcessor(
        size={"height": 32, "width": 32},
        crop_size={"height": 32, "width": 32},
        do_center_crop=False,
        image_seq_length=17,
    )
    processor = Florence2Processor(image_processor=images, tokenizer=tok)
    special = dict(
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id
    )
    config = Florence2Config(
        vision_config=FLORENCE_VISION,
        text_config=dict(
            FLORENCE_TEXT, vocab_size=len(tok), decoder_start_token_id=tok.eos_token_id, **special
        ),
        image_token_id=tok.image_token_id,
    )
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(config).eval()
    model.generation_config.min_new_tokens = 4  # random weights: never an empty caption
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


# the language model of both tiny VLMs: one layer, grouped-query attention as in Qwen2 and Llama 3
TINY_DECODER = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=512,
)
VLM_WORDS = WORDS + "write describe caption list tags image this for helpful you are an captioner".split()
# Qwen2-VL's chat format (ChatML; an image item becomes vision_start + image_pad + vision_end), written here
# because the tiny model has no Hub repo to bring its own
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# JoyCaption's (Llama 3) format reads only text content; the image placeholder is the caller's job
LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _bpe_tokenizer(folder: Path, special: list[str], **tokens: str):
    """A byte-level BPE tokenizer trained here, wrapped as a transformers fast tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(VLM_WORDS)] * 20, vocab_size=400, special_tokens=special)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, **tokens)


def build_tiny_qwen2_vl(folder: Path) -> Path:
    """Qwen2-VL at toy sizes: 56 px images -> 4x4 patches of 14 px -> 2x2 merged image tokens. Its processor
    needs torchvision (as the real Qwen-VL processors do): build and use it in the ComfyUI test venv."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    special += ["<|image_pad|>", "<|video_pad|>"]
    tok = _bpe_tokenizer(folder, special, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(size=pixels),  # transformers' video processors need torchvision
        chat_template=QWEN_TEMPLATE,
    )
    ids = tok.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config=dict(
            **TINY_DECODER,
            vocab_size=len(tok),
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return _save_vlm(Qwen2VLForConditionalGeneration(config), processor, folder, ids("<|im_end|>"))


def build_tiny_llava(folder: Path) -> Path:
    """A LLaVA shaped like JoyCaption (SigLIP vision, Llama text, all patch features) at toy sizes."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, SiglipImageProcessor

    special = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<image>"]
    special += ["<|finetune_right_pad_id|>"]
    tok = _bpe_tokenizer(
        folder,
        special,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
    )
    images = SiglipImageProcessor(size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="full",
        chat_template=LLAMA_TEMPLATE,
    )
    ids = tok.convert_tokens_to_ids
    config = LlavaConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=dict(
            **TINY_DECODER,
            model_type="llama",
            vocab_size=len(tok),
            bos_token_id=ids("<|begin_of_text|>"),
            eos_token_id=ids("<|eot_id|>"),
            pad_token_id=ids("<|finetune_right_pad_id|>"),
        ),
        image_token_index=ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-2,
    )
    return _save_vlm(LlavaForConditionalGeneration(config), processor, folder, ids("<|eot_id|>"))


def _save_vlm(model, processor, folder: Path, eos: int) -> Path:
    torch.manual_seed(0)
    model.init_weights()
    model.eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.min_new_tokens = 4  # random weights: never an empty caption
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder
