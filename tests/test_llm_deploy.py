"""Text adapters a server can load: the vLLM/TGI serving check and the GGUF (llama.cpp / Ollama) export.

llama-cpp-python has no prebuilt wheel for this platform (a source build did not finish in the time we allow
the test setup), so the GGUF file is proved with gguf's own reader: names, shapes, alpha and tensor values
against the peft adapter, including llama.cpp's Llama q/k row order (B @ A * alpha / r of the file equals
the permuted peft delta).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_host import REPO
from tiny_llm import build_tiny_lm, build_tokenizer

from lorascripts.errors import ModelError
from lorascripts.llm.serving import check_adapter, vllm_rank_flag


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tok"), ["a caption for a misty canal"] * 20)


def _adapter(model_dir: Path, out: Path, **lora) -> Path:  # noqa: ANN003
    """A peft adapter with random (non-zero) A and B, saved as training saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    settings = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear", "init_lora_weights": False, **lora}
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", **settings))
    model.save_pretrained(str(out))
    return out


def _edit(adapter: Path, **changes) -> Path:  # noqa: ANN003
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, **changes}))
    return adapter


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tokenizer_dir) -> Path:
    return build_tiny_lm("llama", tmp_path_factory.mktemp("llama") / "base", tokenizer_dir)


def test_vllm_rank_flags_follow_its_allowed_set():
    assert [vllm_rank_flag(r) for r in (1, 2, 8, 9, 16, 24, 300, 320, 512, 513)] == [
        1,
        8,
        8,
        16,
        16,
        32,
        320,
        320,
        512,
        None,
    ]


def test_a_plain_adapter_passes_with_the_exact_server_flags(llama, tmp_path):
    adapter = _adapter(llama, tmp_path / "voice", r=24, lora_alpha=48)
    report = check_adapter(adapter)
    assert report.ok and report.scale == 2.0
    assert report.commands["vllm"] == (
        f"vllm serve {llama} --enable-lora --max-lora-rank 32 --lora-modules voice={adapter}"
    )
    assert report.commands["tgi"].endswith(f"--lora-adapters voice={adapter}")
    rs = check_adapter(_adapter(llama, tmp_path / "rs", r=16, lora_alpha=16, use_rslora=True))
    assert rs.ok and rs.scale == 4.0 and "alpha/sqrt(r)" in rs.notes[0]


@pytest.mark.parametrize(
    ("change", "vllm", "tgi"),
    [
        ({"use_dora": True}, "DoRA", "DoRA"),
        ({"bias": "lora_only"}, "bias", "bias"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save", "modules_to_save"),
        ({"r": 600}, "over vLLM's largest --max-lora-rank 512", None),
        ({"rank_pattern": {"q_proj": 4}}, None, "rank_pattern"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, None, "['embed_tokens']"),
        ({"target_modules": ["c_attn", "q_proj"]}, "['c_attn']", "['c_attn']"),
    ],
)
def test_what_each_server_refuses_is_named_with_the_fix(llama, tmp_path, change, vllm, tgi):
    report = check_adapter(_edit(_adapter(llama, tmp_path / "a"), **change))
    for server, expected in (("vllm", vllm), ("tgi", tgi)):
        text = "\n".join(report.errors[server])
        assert (expected in text and "fix:" in text) if expected else not text, (server, text)
    assert not report.ok and "will not serve it" in report.format()


def test_check_cli_exit_codes_and_bad_folders(llama, tmp_path):
    good = _adapter(llama, tmp_path / "good")
    cmd = [sys.executable, "-m", "lorascripts", "llm", "check"]
    ok = subprocess.run([*cmd, str(good), "--json"], cwd=str(REPO), capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    bad = _edit(_adapter(llama, tmp_path / "bad"), use_dora=True)
    refused = subprocess.run([*cmd, str(bad)], cwd=str(REPO), capture_output=True, text=True)
    assert refused.returncode == 1 and "vLLM: will not serve it" in refused.stdout
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="adapter_config.json is not valid JSON"):
        check_adapter(tmp_path / "broken")
    with pytest.raises(ModelError, match="not a PEFT adapter folder"):
        check_adapter(tmp_path)


def _gguf_tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    # the reader gives ggml's shape order; the data array is in numpy (row-major) order
    return {
        t.name: np.array(t.data).reshape([int(n) for n in reversed(t.shape)]) for t in reader.tensors
    }, fields


def _permute(rows: torch.Tensor, heads: int) -> torch.Tensor:
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, -1).transpose(1, 2).reshape(rows.shape)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_export_matches_the_peft_adapter(arch, tokenizer_dir, tmp_path):
    from safetensors.torch import load_file

    base = build_tiny_lm(arch, tmp_path / arch, tokenizer_dir)
    adapter = _adapter(base, tmp_path / "voice", r=8, lora_alpha=16, use_rslora=arch == "qwen2")
    out = tmp_path / "export" / "voice.gguf"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lorascripts",
            "llm",
            "export",
            str(adapter),
            "--format",
            "gguf",
            "-o",
            str(out),
        ],
        cwd=str(REPO),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    tensors, fields = _gguf_tensors(out)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == arch
    alpha = (
        16 * math.sqrt(8) if arch == "qwen2" else 16.0
    )  # rsLoRA: llama.cpp's alpha/r must give alpha/sqrt(r)
    assert fields["adapter.lora.alpha"] == pytest.approx(alpha)
    peft = load_file(str(adapter / "adapter_model.safetensors"))
    assert len(tensors) == len(peft) == 2 * 7 * 2  # 7 projections in 2 layers, A and B each
    heads = {"q_proj": 4, "k_proj": 2}
    for layer in range(2):
        for module, name in (
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("mlp.down_proj", "ffn_down"),
        ):
            key = f"base_model.model.model.layers.{layer}.{module}"
            a, b = peft[f"{key}.lora_A.weight"], peft[f"{key}.lora_B.weight"]
            ga = torch.from_numpy(tensors[f"blk.{layer}.{name}.weight.lora_a"])
            gb = torch.from_numpy(tensors[f"blk.{layer}.{name}.weight.lora_b"])
            assert ga.shape == (8, a.shape[1]) and gb.shape == (b.shape[0], 8)
            scale = (16 / math.sqrt(8)) if arch == "qwen2" else 16 / 8
            delta = b @ a * scale
            short = module.rsplit(".", 1)[-1]
            if arch == "llama" and short in heads:
                delta = _permute(delta, heads[short])  # llama.cpp's rotary row order for Llama q/k
            assert torch.allclose(gb @ ga * alpha / 8, delta, atol=1e-5)
    assert (out.parent / "Modelfile").read_text() == f"FROM {base}\nADAPTER ./voice.gguf\n"


def test_gguf_export_refuses_what_llama_cpp_cannot_apply(llama, tmp_path):
    from lorascripts.llm.gguf_export import export_gguf_adapter

    dora = _adapter(llama, tmp_path / "dora", use_dora=True)
    with pytest.raises(ModelError, match="DoRA adapters have no GGUF form"):
        export_gguf_adapter(dora, tmp_path / "x.gguf")
    patterned = _edit(_adapter(llama, tmp_path / "p"), alpha_pattern={"q_proj": 4})
    with pytest.raises(ModelError, match="alpha_pattern"):
        export_gguf_adapter(patterned, tmp_path / "y.gguf")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "y.gguf").exists()


def test_base_and_merged_models_as_gguf(llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = _adapter(llama, tmp_path / "voice")
    out = tmp_path / "export" / "voice.gguf"
    cmd = [sys.executable, "-m", "lorascripts", "llm", "export", str(adapter), "-o", str(out)]
    done = subprocess.run([*cmd, "--with-base", "--merged"], cwd=str(REPO), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    base_file = out.with_name("base-base.gguf")
    assert (out.parent / "Modelfile").read_text() == f"FROM {base_file}\nADAPTER ./voice.gguf\n"
    tokenizer = AutoTokenizer.from_pretrained(str(llama))
    base = AutoModelForCausalLM.from_pretrained(str(llama)).state_dict()
    for path in (base_file, out.with_name("voice-merged.gguf")):
        tensors, fields = _gguf_tensors(path)
        assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
        assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
        assert fields["tokenizer.ggml.model"] == "gpt2" and len(fields["tokenizer.ggml.tokens"]) == len(
            tokenizer
        )
        assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
        assert fields["tokenizer.ggml.add_bos_token"] is False  # the tiny tokenizer adds none
        assert fields["tokenizer.ggml.tokens"][tokenizer.eos_token_id] == "<|im_end|>"
        assert fields["tokenizer.chat_template"] == tokenizer.chat_template
        assert len(tensors) == 2 + 2 * 9 + 1  # embeddings, output norm, 9 per block, output
        embed = torch.from_numpy(tensors["token_embd.weight"].astype("float32"))
        assert torch.allclose(embed, base["model.embed_tokens.weight"], atol=1e-3)  # f16 in the file
    base_tensors, _ = _gguf_tensors(base_file)
    base_q = torch.from_numpy(base_tensors["blk.1.attn_q.weight"].astype("float32"))
    assert torch.allclose(base_q, _permute(base["model.layers.1.self_attn.q_proj.weight"], 4), atol=1e-3)
    merged_v = torch.from_numpy(tensors["blk.0.attn_v.weight"].astype("float32"))
    base_v = base["model.layers.0.self_attn.v_proj.weight"]
    assert merged_v.shape == base_v.shape and not torch.allclose(
        merged_v, base_v, atol=1e-2
    )  # the adapter is in


def test_qwen2_model_gguf_keeps_biases_and_leaves_out_a_tied_output(tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from lorascripts.llm.gguf_model import export_gguf_model

    folder = build_tiny_lm("qwen2", tmp_path / "untied", tokenizer_dir)
    config = Qwen2Config.from_pretrained(str(folder))
    config.tie_word_embeddings = True
    Qwen2ForCausalLM(config).save_pretrained(str(tmp_path / "tied"))
    AutoTokenizer.from_pretrained(str(folder)).save_pretrained(str(tmp_path / "tied"))
    tensors, fields = _gguf_tensors(export_gguf_model(tmp_path / "tied", tmp_path / "tied.gguf", "f16"))
    assert fields["general.architecture"] == "qwen2" and "output.weight" not in tensors
    state = AutoModelForCausalLM.from_pretrained(str(tmp_path / "tied")).state_dict()
    bias = tensors["blk.0.attn_q.bias"]
    assert bias.dtype.name == "float32" and tensors["blk.0.attn_q.weight"].dtype.name == "float16"
    assert bias.shape == tuple(state["model.layers.0.self_attn.q_proj.bias"].shape)
    q = torch.from_numpy(tensors["blk.0.attn_q.weight"].astype("float32"))
    assert torch.allclose(
        q, state["model.layers.0.self_attn.q_proj.weight"], atol=1e-3
    )  # Qwen2: rows as stored
