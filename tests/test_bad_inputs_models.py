"""Bad input, LoRA and checkpoint files: every case of docs/BAD_INPUTS.md through each entry point that reads
them (LoRA loading, merge, resize, convert, inspect, self-test, training's `initial_lora`, base-model loading)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from bad_inputs import first_key, lora_variants, pickle_with_payload, safetensors_bytes
from helpers_train import make_dataset, tiny_config
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lorascripts.config import config_from_dict
from lorascripts.errors import DatasetError, LoraScriptsError, ModelError
from lorascripts.models.loader import load_base_model
from lorascripts.network.from_file import load_lora
from lorascripts.network.lora import LoraNetwork, NetworkSpec
from lorascripts.network.save import read_lora_file, save_lora_file
from lorascripts.toolbox.convert import to_diffusers
from lorascripts.toolbox.inspect import inspect_lora
from lorascripts.toolbox.merge import merge_into_checkpoint, merge_loras
from lorascripts.toolbox.resize import resize_lora
from lorascripts.toolbox.selftest import self_test
from lorascripts.train.trainer import train


@pytest.fixture(scope="module")
def sd1_base(tiny_sd1):
    return load_base_model(str(tiny_sd1.single_file), tokenizer_path=str(tiny_sd1.tokenizer_dir))


@pytest.fixture(scope="module")
def good_lora(sd1_base, tmp_path_factory) -> Path:
    network = LoraNetwork.create(sd1_base, NetworkSpec(network_type="lora", rank=4, alpha=2.0))
    tensors = network.kohya_state_dict(torch.float32)
    g = torch.Generator().manual_seed(0)
    tensors = {
        k: torch.randn(v.shape, generator=g) * 0.05 if "lora_up" in k else v for k, v in tensors.items()
    }
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2.0"}
    return save_lora_file(tmp_path_factory.mktemp("lora") / "good.safetensors", tensors, meta)


# what each damaged LoRA must produce when it is about to be used (loading, merging, resizing, converting)
USE_ERRORS = {
    "nan_tensor": r"lora_up\.weight contains NaN/inf values",
    "rank_mismatch": r"lora_up \(\d+, 4\) and lora_down \(5, \d+\) disagree on the rank",
    "alpha_not_scalar": r"alpha has 3 values, expected one number",
    "missing_up": r"has lora_down but not lora_up",
    "no_tensors": r"the file holds no tensors",
    "foreign_tensors": r"no kohya LoRA modules .*model\.embed\.weight",
    "peft_keys": r"diffusers/PEFT format.*lora convert --to kohya",
}


def _variant(good_lora: Path, case: str, tmp_path: Path) -> Path:
    tensors = lora_variants(load_file(str(good_lora)))[case]
    path = tmp_path / f"{case}.safetensors"
    save_file(tensors, str(path), {"ss_network_module": "networks.lora"})
    return path


@pytest.mark.parametrize("case", sorted(USE_ERRORS))
def test_damaged_lora_is_refused_by_every_tool_and_reported_by_inspect(
    case: str, good_lora: Path, sd1_base, tiny_sd1, tmp_path: Path
) -> None:
    path = _variant(good_lora, case, tmp_path)
    out = tmp_path / "out.safetensors"
    uses = {
        "load_lora": lambda: load_lora(sd1_base, path),
        "merge": lambda: merge_loras([(good_lora, 1.0), (path, 0.5)], out),
        "merge_into_checkpoint": lambda: merge_into_checkpoint(tiny_sd1.single_file, [(path, 1.0)], out),
        "resize": lambda: resize_lora(path, out, rank=2),
        "to_diffusers": lambda: to_diffusers(path, out),
    }
    for use, call in uses.items():
        with pytest.raises(ModelError, match=USE_ERRORS[case]) as error:
            call()
        assert path.name in str(error.value), use
    assert not out.exists()
    # the diagnostic tools still open the file and say what is wrong with it
    info = inspect_lora(path)
    assert any(re.search(USE_ERRORS[case], p) for p in info["problems"]), info["problems"]
    report = self_test(path, "sd1")
    assert not report.ok and report.problems


def test_lora_for_another_model_is_refused(good_lora: Path, sd1_base, tiny_sd1, tmp_path: Path) -> None:
    wrong_family = _variant(good_lora, "wrong_family", tmp_path)
    with pytest.raises(
        ModelError, match=r"wrong_family\.safetensors: the LoRA's \d+ modules match no layer of this SD1"
    ):
        load_lora(sd1_base, wrong_family)
    with pytest.raises(
        ModelError, match=r"different base models \(.*: SD1, wrong_family\.safetensors: SDXL\)"
    ):
        merge_loras([(good_lora, 1.0), (wrong_family, 1.0)], tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match="is a SDXL LoRA; tiny-sd1.safetensors is SD1"):
        merge_into_checkpoint(tiny_sd1.single_file, [(wrong_family, 1.0)], tmp_path / "c.safetensors")
    assert "trained for SDXL but the base model is SD1" in self_test(wrong_family, "sd1").problems[0]
    with pytest.raises(
        ModelError, match="--base must be flux1, sd1, sd2, sdxl, zimage or a .safetensors checkpoint; 'sd5'"
    ):
        self_test(good_lora, "sd5")
    wrong_shape = _variant(good_lora, "wrong_layer_shape", tmp_path)
    with pytest.raises(ModelError, match="does not fit this model"):
        load_lora(sd1_base, wrong_shape)
    with pytest.raises(
        ModelError, match=r"is a different layer in these LoRAs \(good.safetensors: \(\d+, \d+\)"
    ):
        merge_loras([(good_lora, 1.0), (wrong_shape, 1.0)], tmp_path / "m.safetensors")
    with pytest.raises(
        ModelError, match=r"wrong_layer_shape.safetensors: module .* changes a \(\d+, \d+\) weight"
    ):
        merge_into_checkpoint(tiny_sd1.single_file, [(wrong_shape, 1.0)], tmp_path / "c.safetensors")
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "c.safetensors").exists()


HEADERS = {
    "zero_byte": (b"", "header too small"),
    "shorter_than_a_header": (b"abc", "header too small"),
    "huge_header_length": (safetensors_bytes({"a": 1}, length=2**62), "header too large"),
    "header_over_100mb": (safetensors_bytes(b"{", length=200 * 2**20), "header too large"),
    "malformed_json": (safetensors_bytes(b'{"a":,}'), "invalid JSON in header"),
    "offsets_past_the_end": (
        safetensors_bytes({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, b"\0" * 16),
        "incomplete metadata",
    ),
    "pickle_renamed": (None, "not a readable .safetensors"),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_malformed_safetensors_headers_are_named(
    case: str, good_lora: Path, sd1_base, tmp_path: Path
) -> None:
    data, pattern = HEADERS[case]
    path = tmp_path / "bad.safetensors"
    if data is None:
        torch.save({"w": torch.zeros(2)}, path)
    else:
        path.write_bytes(data)
    calls = {
        "read": lambda: read_lora_file(path),
        "inspect": lambda: inspect_lora(path),
        "selftest": lambda: self_test(path, "sd1"),
        "load_lora": lambda: load_lora(sd1_base, path),
        "merge": lambda: merge_loras([(good_lora, 1.0), (path, 1.0)], tmp_path / "m.safetensors"),
        "base_model": lambda: load_base_model(str(path)),
    }
    for name, call in calls.items():
        with pytest.raises(ModelError, match=pattern) as error:
            call()
        assert str(path) in str(error.value) and "Re-download" in str(error.value), name


def test_pickle_files_are_refused_and_never_unpickled(
    good_lora: Path, sd1_base, tiny_sd1, tmp_path: Path
) -> None:
    sentinel = tmp_path / "PAYLOAD_RAN"
    evil = pickle_with_payload(tmp_path / "evil.ckpt", sentinel)
    for call in (
        lambda: read_lora_file(evil),
        lambda: load_lora(sd1_base, evil),
        lambda: inspect_lora(evil),
        lambda: merge_into_checkpoint(evil, [(good_lora, 1.0)], tmp_path / "c.safetensors"),
    ):
        with pytest.raises(ModelError, match="only .safetensors .*pickle files can run code"):
            call()
    with pytest.raises(ModelError, match="pickle checkpoint.*allow_pickle: true"):
        load_base_model(str(evil))
    with pytest.raises(
        ModelError, match="evil.ckpt was refused: it is not a plain-weights pickle.*safetensors version"
    ):
        load_base_model(str(evil), allow_pickle=True)
    assert not sentinel.exists()
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="list.pt holds a list, not a checkpoint"):
        load_base_model(str(tmp_path / "list.pt"), allow_pickle=True)


def _checkpoint_without(
    tiny_sd1, tmp_path: Path, name: str, drop: str = "", meta: dict | None = None
) -> Path:
    state = load_file(str(tiny_sd1.single_file))
    with safe_open(str(tiny_sd1.single_file), "pt") as fh:
        metadata = dict(fh.metadata() or {})
    path = tmp_path / f"{name}.safetensors"
    save_file(
        {k: v for k, v in state.items() if not drop or drop not in k}, str(path), {**metadata, **(meta or {})}
    )
    return path


CHECKPOINTS = {
    "missing_first_conv": ({"drop": "input_blocks.0.0"}, r"weight 'input_blocks\.0\.0\.weight' is missing"),
    "missing_cross_attention": ({"drop": "attn2"}, r"cannot work out the architecture"),
    "missing_vae": ({"drop": "first_stage_model."}, r"weight 'encoder\.conv_in\.weight' is missing"),
    "bad_arch_metadata": ({"meta": {"lorascripts.arch": "{not json"}}, r"cannot work out the architecture"),
    "only_text_encoder": (
        {"drop": "model.diffusion_model."},
        r"not a FLUX\.1, Stable Diffusion 1\.x/2\.x/XL, Z-Image checkpoint",
    ),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_incomplete_checkpoints_are_explained(case: str, tiny_sd1, tmp_path: Path) -> None:
    kwargs, pattern = CHECKPOINTS[case]
    path = _checkpoint_without(tiny_sd1, tmp_path, case, **kwargs)
    with pytest.raises(ModelError, match=pattern) as error:
        load_base_model(str(path), tokenizer_path=str(tiny_sd1.tokenizer_dir))
    assert path.name in str(error.value)


def test_checkpoint_nan_wrong_family_and_shapes(tiny_sd1, tmp_path: Path, good_lora: Path) -> None:
    state = load_file(str(tiny_sd1.single_file))
    with safe_open(str(tiny_sd1.single_file), "pt") as fh:
        metadata = dict(fh.metadata() or {})
    key = first_key(state, "attn2.to_k.weight")
    nan = {**state, key: state[key].clone().fill_(float("nan"))}
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata)
    with pytest.raises(ModelError, match=f"nan.safetensors: weight {key} contains NaN/inf"):
        load_base_model(str(tmp_path / "nan.safetensors"), tokenizer_path=str(tiny_sd1.tokenizer_dir))
    shapes = {**state, key: torch.zeros(state[key].shape[0], state[key].shape[1] + 1)}
    save_file(shapes, str(tmp_path / "shapes.safetensors"), metadata)
    with pytest.raises(ModelError, match=r"shapes.safetensors: the U-Net weight .* has shape"):
        load_base_model(str(tmp_path / "shapes.safetensors"), tokenizer_path=str(tiny_sd1.tokenizer_dir))
    with pytest.raises(ModelError, match="is a SD1.x model, but model_family is sdxl"):
        load_base_model(
            str(tiny_sd1.single_file), tokenizer_path=str(tiny_sd1.tokenizer_dir), expected_family="sdxl"
        )
    with pytest.raises(ModelError, match="good.safetensors is not a FLUX.1, Stable Diffusion.*Is it a LoRA"):
        load_base_model(str(good_lora))


@pytest.mark.parametrize("case", ["nan_tensor", "wrong_family"])
def test_bad_initial_lora_stops_training_before_it_starts(
    case: str, good_lora: Path, tiny_sd1, tmp_path: Path
) -> None:
    lora = _variant(good_lora, case, tmp_path)
    data = make_dataset(tmp_path / "data", n=2)
    cfg = config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "out", initial_lora=str(lora)))
    pattern = "contains NaN/inf" if case == "nan_tensor" else "match no layer of this SD1 model"
    with pytest.raises(LoraScriptsError, match=pattern) as error:
        train(cfg)
    assert isinstance(error.value, ModelError)
    assert not list((tmp_path / "out").glob("*.safetensors"))


def test_hand_edited_metadata_does_not_break_tools(good_lora: Path, sd1_base, tmp_path: Path) -> None:
    tensors, _ = read_lora_file(good_lora)
    odd = {
        "ss_network_args": "{oops",
        "ss_network_dim": "x",
        "ss_network_alpha": "nan",
        "ss_tag_frequency": "[1, 2]",
    }
    save_file(tensors, str(path := tmp_path / "odd.safetensors"), odd)
    network = load_lora(sd1_base, path)
    network.remove()
    info = inspect_lora(path)
    assert info["top_tags"] == [] and info["modules"] == len({k.split(".")[0] for k in tensors})
    merge_loras([(path, 1.0)], tmp_path / "merged.safetensors")
    assert json.loads(read_lora_file(tmp_path / "merged.safetensors")[1]["ss_tag_frequency"]) == {}


MISSING = {
    "train_data_dir": (DatasetError, "train_data_dir {p} is not a folder"),
    "metadata_path": (DatasetError, "metadata_path {p} does not exist"),
    "base_model": (ModelError, "base_model {p} does not exist"),
    "tokenizer_path": (ModelError, "tokenizer_path {p} has no vocab.json"),
    "initial_lora": (ModelError, "LoRA file {p} does not exist"),
}


@pytest.mark.parametrize("key", sorted(MISSING))
def test_missing_files_in_the_config_are_named(key: str, tiny_sd1, tmp_path: Path) -> None:
    error_type, message = MISSING[key]
    missing = tmp_path / "nowhere" / f"{key}.safetensors"
    data = make_dataset(tmp_path / "data", n=2)
    cfg = config_from_dict(tiny_config(tiny_sd1, data, tmp_path / "out", **{key: str(missing)}))
    with pytest.raises(error_type) as error:
        train(cfg)
    assert message.format(p=missing) in str(error.value)


def test_tokenizer_from_another_model_is_refused_at_load(tiny_sd1, tmp_path: Path) -> None:
    """A CLIP tokenizer with more tokens than the checkpoint's text encoder used to fail mid-step (IndexError)."""
    from lorascripts.models.tokenizer_build import train_clip_tokenizer

    words = [f"word{i} token{i * 7} piece{i * 13}" for i in range(400)]
    big = train_clip_tokenizer(words, tmp_path / "big-tokenizer", vocab_size=2000)
    with pytest.raises(
        ModelError, match=r"tokens but text encoder 1 of tiny-sd1.safetensors has \d+.*tokenizer_path"
    ):
        load_base_model(str(tiny_sd1.single_file), tokenizer_path=str(big))
    assert load_base_model(
        str(tiny_sd1.single_file), tokenizer_path=str(tiny_sd1.tokenizer_dir)
    )  # the right one
