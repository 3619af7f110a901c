"""Property-based checks: whatever a user writes into a config, a metadata.csv or a JSONL file, only our own
error types (with their messages) come out — never a bare traceback."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorascripts.config import TrainConfig, config_from_dict
from lorascripts.data.captions import read_metadata
from lorascripts.errors import LoraScriptsError
from lorascripts.llm.config import LLMConfig
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
        ['{"prompt": "a", "response": "b"}', '{"messages": []}', "{", "[]", "null", '{"output": 3}', ""]
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
