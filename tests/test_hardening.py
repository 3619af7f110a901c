"""Property-based checks: whatever a user writes into a config, a metadata.csv or a JSONL file, only our own
error types (with their messages) come out — never a bare traceback."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from lorascripts.config import TrainConfig, config_from_dict
from lorascripts.config.llm import LLMConfig
from lorascripts.data.captions import read_metadata
from lorascripts.errors import LoraScriptsError
from lorascripts.llm.data import read_jsonl

KEYS = sorted(
    {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(LLMConfig)}
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
CONFIGS = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), VALUES, max_size=8)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(raw=CONFIGS, task=st.sampled_from([None, "image", "llm", "video", 3]))
def test_config_loader_only_raises_its_own_errors(raw, task):
    if task is not None:
        raw = {**raw, "task": task}
    raw.setdefault("base_model", "toy")
    raw.setdefault("train_data_dir" if task != "llm" else "train_data", "data")
    try:
        config_from_dict(raw)
    except LoraScriptsError as exc:
        assert str(exc)  # a message the user can act on


def _file(data: bytes, suffix: str) -> Path:
    handle = tempfile.NamedTemporaryFile(delete=False, suffix=suffix)  # noqa: SIM115 - closed right here
    handle.write(data)
    handle.close()
    return Path(handle.name)


CSV_TEXT = st.lists(
    st.sampled_from(
        [
            "file_name,caption",
            "a.png,x",
            '"b.png","y, z"',
            "c.png",
            ",",
            '"',
            "\ufeff",
            "\r",
            "\x00",
            "é,\u2028",
        ]
    )
    | st.text(max_size=15),
    max_size=6,
).map("\n".join)


@FAST
@given(body=st.one_of(CSV_TEXT.map(str.encode), st.binary(max_size=80)))
def test_metadata_reader_only_raises_dataset_errors(body):
    path = _file(body, ".csv")
    try:
        rows = read_metadata(path)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in rows.items())
    except LoraScriptsError as exc:
        assert str(path) in str(exc)  # the message names the file
    finally:
        path.unlink()


JSON_LINES = st.lists(
    st.sampled_from(
        [
            '{"prompt": "a", "response": "b"}',
            '{"messages": []}',
            "{",
            "[]",
            "null",
            '{"output": 3}',
            "",
            "[" * 50_000,
            '{"prompt": "\\ud800", "response": "b"}',
            '{"instruction": "a", "output": "\\udc00\\ud800"}',
            '{"prompt": "a", "response": "' + "{" * 3000 + '"}',
        ]
    )
    | st.text(max_size=20),
    max_size=5,
).map("\n".join)


@FAST
@given(
    body=st.one_of(JSON_LINES.map(str.encode), st.binary(max_size=60)),
    mode=st.sampled_from(["error", "skip"]),
)
def test_jsonl_reader_only_raises_dataset_errors(body, mode):
    path = _file(body, ".jsonl")
    try:
        examples = read_jsonl(path, mode)
        assert examples and all(e.messages[-1]["role"] == "assistant" for e in examples)
    except LoraScriptsError as exc:
        assert str(exc)
    finally:
        path.unlink()


OPTIMIZER_ARG_NAMES = [
    "betas",
    "eps",
    "weight_decay",
    "amsgrad",
    "fused",
    "foreach",
    "d_coef",
    "beta3",
    "clip_threshold",
    "decay_rate",
    "relative_step",
    "lr",
    "params",
    "momentum",
]


@FAST
@given(
    optimizer=st.sampled_from(["adamw", "prodigy", "adafactor"]),
    args=st.dictionaries(st.sampled_from(OPTIMIZER_ARG_NAMES) | st.text(max_size=6), VALUES, max_size=3),
)
@example(optimizer="adamw", args={"betas": []})  # found by this test: an IndexError inside AdamW
@example(optimizer="prodigy", args={"betas": {}})  # and a KeyError
def test_optimizer_args_fail_at_load_or_not_at_all(optimizer, args):
    """Whatever `optimizer_args` hold, the config load refuses them with a ConfigError naming the key, or the
    optimizer builds and steps: never a library TypeError in the middle of a run."""
    import torch

    from lorascripts.errors import ConfigError
    from lorascripts.run.optim import create_optimizer

    raw = {"base_model": "toy", "train_data_dir": "d", "optimizer": optimizer, "optimizer_args": args}
    try:
        cfg = config_from_dict(raw)
    except ConfigError as exc:
        assert "optimizer_args" in str(exc)
        return
    param = torch.nn.Parameter(torch.ones(3))
    opt = create_optimizer(cfg, [{"params": [param]}], torch.device("cpu"))
    param.grad = torch.ones(3)
    opt.step()


YAML_VALUES = st.sampled_from(
    [
        '"\\ud800"',
        '"a\\0b"',
        "18446744073709551617",
        "512xabc",
        ".nan",
        ".inf",
        "-1",
        "1e400",
        "[1, [2]]",
        "{a: 1}",
        "&a [1]",
        "*a",
        "~",
        "'",
        '"',
        "\t",
        "yes",
        "!!python/object/apply:os.system [echo]",
        "!!binary aGk=",
        "2001-12-14",
        "0x1F",
        "[]",
        "{}",
        "- x",
    ]
) | st.text(max_size=12)
YAML_LINES = st.lists(
    st.tuples(st.sampled_from(KEYS) | st.text(max_size=8), YAML_VALUES).map(lambda kv: f"{kv[0]}: {kv[1]}")
    | st.sampled_from(["---", "...", "  nested: 1", "- item", "%YAML 1.1", "\ufeff", "#"]),
    max_size=8,
).map("\n".join)


@FAST
@given(
    body=st.one_of(
        YAML_LINES.map(str.encode),
        YAML_LINES.map(lambda t: f"base_model: toy\ntrain_data_dir: data\n{t}".encode()),
        st.binary(max_size=60),
    ),
    sets=st.lists(
        st.tuples(st.sampled_from(KEYS), YAML_VALUES).map("=".join) | st.text(max_size=8), max_size=2
    ),
)
def test_yaml_config_files_only_raise_config_errors(body, sets):
    from lorascripts.config import load_config

    path = _file(body, ".yaml")
    try:
        load_config(path, sets)
        event("loaded")
    except LoraScriptsError as exc:
        event(f"refused: {type(exc).__name__}")
        assert str(exc) and (
            str(path) in str(exc) or "command line" in str(exc) or "--set" in str(exc) or "`" in str(exc)
        )
    finally:
        path.unlink()


_PNG = None


def _png() -> bytes:
    global _PNG  # noqa: PLW0603 - encoded once for every example
    if _PNG is None:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "PNG")
        _PNG = buffer.getvalue()
    return _PNG


FOLDER_NAMES = st.tuples(
    st.one_of(st.none(), st.integers(min_value=-3, max_value=10**12)),
    st.text(
        st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12
    ),
).map(lambda t: f"{t[0]}_{t[1]}" if t[0] is not None else t[1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    folders=st.lists(
        st.tuples(FOLDER_NAMES, st.binary(max_size=40) | st.text(max_size=20).map(str.encode)), max_size=3
    ),
    policy=st.sampled_from(["error", "trigger", "folder_name", "empty"]),
    bad=st.sampled_from(["error", "skip"]),
)
def test_repeat_folders_and_sidecars_only_raise_dataset_errors(folders, policy, bad):
    from lorascripts.data.sources import scan_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, sidecar in folders:
            folder = root / name
            try:
                folder.mkdir(exist_ok=True)
            except OSError:
                continue  # a name this filesystem cannot hold (too long in bytes)
            (folder / "pic.png").write_bytes(_png())
            (folder / "pic.txt").write_bytes(sidecar)
        try:
            result = scan_dataset(root, missing_captions=policy, trigger_word="zk", bad_images=bad)
            assert all(
                item.path.is_file() and isinstance(item.caption, str) and item.repeats >= 1
                for item in result.items
            )
            event("scanned")
        except LoraScriptsError as exc:
            event(f"refused: {type(exc).__name__}")
            assert str(exc)


TENSOR_NAMES = st.sampled_from(
    [
        "lora_unet_a.lora_down.weight",
        "lora_unet_a.lora_up.weight",
        "lora_unet_a.alpha",
        "lora_te_b.hada_w1_a",
        "lora_te_b.hada_w1_b",
        "lora_te_b.hada_w2_a",
        "lora_te_b.hada_w2_b",
        "lora_unet_c.lokr_w1",
        "lora_unet_c.lokr_w2",
        "lora_unet_c.lokr_w2_a",
        "lora_unet_c.lokr_w2_b",
        "unet.x.lora_A.weight",
        "other",
    ]
)
ENTRIES = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "XX"]),
        "shape": st.lists(st.integers(min_value=0, max_value=5), max_size=4),
    }
)


def _header_file(entries: dict, metadata: object, slack: int, raw_len: int | None) -> bytes:
    """A safetensors header with consistent offsets (so the parser gets past them) unless `slack` breaks them."""
    import json
    import math
    import struct

    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1, "F64": 8, "XX": 4}
    header: dict = {} if metadata is None else {"__metadata__": metadata}
    offset = 0
    for name, entry in entries.items():
        size = sizes[entry["dtype"]] * math.prod(entry["shape"])
        header[name] = {**entry, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return (
        struct.pack("<Q", raw_len if raw_len is not None else len(raw)) + raw + bytes(max(0, offset + slack))
    )


def _lora_entries(r: int, n_in: int, n_out: int, conv: bool, dtype: str, break_rank: int) -> dict:
    """A kohya LoRA module's header entries; `break_rank` != 0 makes the two factors disagree."""
    k = [3, 3] if conv else []
    return {
        "lora_unet_m.lora_down.weight": {"dtype": dtype, "shape": [r, n_in, *k]},
        "lora_unet_m.lora_up.weight": {
            "dtype": dtype,
            "shape": [n_out, r + break_rank, *([1, 1] if conv else [])],
        },
        "lora_unet_m.alpha": {"dtype": dtype, "shape": []},
    }


LORA_ENTRIES = st.builds(
    _lora_entries,
    st.integers(1, 4),
    st.integers(1, 6),
    st.integers(1, 6),
    st.booleans(),
    st.sampled_from(["F32", "F16", "BF16"]),
    st.sampled_from([0, 0, 0, 1, -1]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.dictionaries(TENSOR_NAMES, ENTRIES, max_size=6) | LORA_ENTRIES,
    metadata=st.none()
    | st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=2),
    slack=st.sampled_from([0, 0, 0, -1, 3]),
    raw_len=st.none() | st.none() | st.integers(min_value=0, max_value=2**64 - 1),
    noise=st.none() | st.binary(max_size=40),
)
def test_safetensors_headers_only_raise_model_errors(entries, metadata, slack, raw_len, noise):
    from lorascripts.network.save import lora_problems, read_lora_file, read_lora_weights
    from lorascripts.toolbox.inspect import inspect_lora
    from lorascripts.toolbox.resize import resize_lora

    path = _file(
        noise if noise is not None else _header_file(entries, metadata, slack, raw_len), ".safetensors"
    )
    out = path.with_name(path.stem + "_out.safetensors")
    try:
        tensors, _ = read_lora_file(path)
        assert isinstance(lora_problems(tensors), list)
        assert isinstance(inspect_lora(path)["problems"], list)
        read_lora_weights(path)  # what loading, merging and resizing accept...
        resize_lora(path, out, rank=1)  # ...must then work
        assert out.is_file()
        event("a usable LoRA, resized")
    except LoraScriptsError as exc:
        event(f"refused: {type(exc).__name__}")
        assert path.name in str(exc) or "module" in str(exc) or "LoRA" in str(exc)
    finally:
        path.unlink()
        out.unlink(missing_ok=True)


@FAST
@given(body=st.binary(max_size=60) | st.text(max_size=40).map(str.encode))
def test_sidecar_caption_files_only_raise_dataset_errors(body):
    from lorascripts.data.captions import read_caption_file

    path = _file(body, ".txt")
    try:
        assert isinstance(read_caption_file(path), str)
    except LoraScriptsError as exc:
        assert str(path) in str(exc) and "line" in str(exc)
    finally:
        path.unlink()
