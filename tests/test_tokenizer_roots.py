"""The tokenizer search every family shares (lorascripts/models/tokenizers_find.py): beside the model, then under
each tokenizer root (the config's `tokenizer_roots`, which the hosts fill, then an importable `comfy`), then the
Hugging Face cache; and the `tokenizer_roots` key from a config file and a host form. The host doors' runs with
the tokenizers only in the host's bundled folders are in test_flux_comfyui.py and test_webui.py."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import shutil
from pathlib import Path

import pytest
from helpers_train import make_dataset

from lorascripts.config import config_from_dict
from lorascripts.errors import ConfigError, ModelError
from lorascripts.host.form import HostForm, RequestRoots, form_config
from lorascripts.models.families.flux1.find import find_t5_tokenizer
from lorascripts.models.tokenizers_find import (
    find_clip_tokenizer,
    find_tokenizer_folder,
    tokenizer_roots,
    using_tokenizer_roots,
)


def _is_tok(folder: Path) -> bool:
    return (folder / "tok.json").is_file()


def _tok(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tok.json").write_text("{}")
    return folder


def _hub_cache(cache: Path, repo: str, name: str) -> Path:
    """A file in huggingface_hub's cache layout (refs/main -> snapshots/<commit>/name), as a download leaves it."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text("0" * 40)
    return _tok((repo_dir / "snapshots" / ("0" * 40) / name).parent)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline, and no importable `comfy` outside the test's own."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert importlib.util.find_spec("comfy") is None
    return cache


def test_search_order_beside_then_roots_then_comfy_then_cache(tmp_path, monkeypatch, empty_hub) -> None:
    near, first, second = tmp_path / "model" / "tok", tmp_path / "user_root", tmp_path / "host_root"
    comfy = tmp_path / "site" / "comfy"
    order = [
        _tok(near),
        _tok(first / "a"),
        _tok(first / "b"),
        _tok(second / "a"),
        _tok(comfy / "b"),
        _hub_cache(empty_hub, "org/repo", "sub/tok.json"),
    ]
    comfy.mkdir(exist_ok=True)  # a namespace package, as ComfyUI's `comfy` is found
    monkeypatch.syspath_prepend(str(comfy.parent))
    importlib.invalidate_caches()
    with using_tokenizer_roots([str(first), second]):
        assert tokenizer_roots() == [first, second, comfy]
        for expected in order:
            found = find_tokenizer_folder([near], ["a", "b"], _is_tok, [("org/repo", "sub/tok.json")])
            assert found.folder == expected
            shutil.rmtree(expected)  # the next place wins once this one is gone
        nothing = find_tokenizer_folder([near], ["a", "b"], _is_tok, [("org/repo", "sub/tok.json")])
    assert nothing.folder is None
    roots = (first, second, comfy)
    assert nothing.looked == (
        str(near),
        *(str(root / rel) for root in roots for rel in ("a", "b")),
        "the Hugging Face cache of org/repo (sub/tok.json)",
    )
    assert tokenizer_roots() == [comfy]  # the roots hold inside the block only; an importable comfy always


def test_family_finders_search_their_own_places_under_the_roots(tmp_path, tiny_tokenizer, empty_hub) -> None:
    from tiny_flux import build_t5_tokenizer

    model = tmp_path / "models" / "flux1.safetensors"
    model.parent.mkdir(parents=True)
    forge, comfy = tmp_path / "forge" / "backend" / "huggingface", tmp_path / "ComfyUI" / "comfy"
    build_t5_tokenizer(forge / "black-forest-labs" / "FLUX.1-dev" / "tokenizer_2")
    shutil.copytree(tiny_tokenizer, comfy / "sd1_tokenizer")
    with pytest.raises(ModelError) as err:
        find_t5_tokenizer(model)
    message = str(err.value)  # where it looked, and the three ways out
    assert str(model.parent / "t5_tokenizer") in message and "google/t5-v1_1-xxl" in message
    assert "`tokenizer_roots`" in message and "beside it" in message
    with pytest.raises(ModelError, match="tokenizer_roots") as err:
        find_clip_tokenizer(None, model)
    assert "HF_HUB_OFFLINE" in str(err.value) and str(model.parent / "tokenizer") in str(err.value)
    with using_tokenizer_roots([forge, comfy]):  # Forge's T5 (FLUX.1-dev/tokenizer_2), ComfyUI's CLIP
        t5, clip = find_t5_tokenizer(model), find_clip_tokenizer(None, model)
    assert t5.name_or_path == str(forge / "black-forest-labs" / "FLUX.1-dev" / "tokenizer_2")
    assert clip.name_or_path == str(comfy / "sd1_tokenizer")
    assert clip.get_vocab() == find_clip_tokenizer(str(tiny_tokenizer), model).get_vocab()


def test_zimage_finds_comfyuis_qwen_tokenizer_under_a_root(tmp_path, empty_hub) -> None:
    """Z-Image's Qwen3 tokenizer: ComfyUI keeps it as `comfy/text_encoders/qwen25_tokenizer`."""
    from tiny_zimage import build_qwen_tokenizer

    from lorascripts.models.families.zimage.find import find_qwen_tokenizer

    model = tmp_path / "models" / "diffusion_models" / "z_image_turbo_bf16.safetensors"
    model.parent.mkdir(parents=True)
    comfy = tmp_path / "ComfyUI" / "comfy"
    with pytest.raises(ModelError, match="tokenizer_roots") as err:
        find_qwen_tokenizer(None, [model])
    assert str(model.parent / "qwen_tokenizer") in str(err.value) and "Tongyi-MAI/Z-Image-Turbo" in str(
        err.value
    )
    build_qwen_tokenizer(comfy / "text_encoders" / "qwen25_tokenizer")
    with using_tokenizer_roots([comfy]):
        found = find_qwen_tokenizer(None, [model])
    assert found.name_or_path == str(comfy / "text_encoders" / "qwen25_tokenizer")
    assert found.chat_template  # ComfyUI's copy has none; the family adds Qwen3's


def test_tokenizer_roots_key_in_a_config_file_and_a_host_form(tmp_path, monkeypatch) -> None:
    (tmp_path / "bundled").mkdir()
    data = make_dataset(tmp_path / "data", n=2, size=32)
    raw = {"base_model": "toy", "train_data_dir": str(data), "output_dir": str(tmp_path / "out")}
    monkeypatch.chdir(tmp_path / "data")  # relative entries: the working folder, then the config's folder
    cfg = config_from_dict({**raw, "tokenizer_roots": "bundled"}, base_dir=tmp_path)
    assert cfg.tokenizer_roots == [str(tmp_path / "bundled")]
    with pytest.raises(ConfigError, match=r"`tokenizer_roots` holds '.*nowhere', which is not a folder"):
        config_from_dict({**raw, "tokenizer_roots": [str(tmp_path / "nowhere")]})
    host = tmp_path / "host" / "comfy"
    host.mkdir(parents=True)
    form = HostForm(
        base_model="toy", dataset=str(data), paths_base=tmp_path, output_dir=str(tmp_path / "out"),
        tokenizer_roots=[str(host)], advanced_yaml="tokenizer_roots: [bundled]",
    )  # fmt: skip
    # the advanced YAML's roots (from the host's root folder) are searched before the host's own
    assert form_config(form).tokenizer_roots == [str(tmp_path / "bundled"), str(host)]
    # a network-facing host reads its own root, and a request's roots only inside the allowed folders
    roots = RequestRoots([data], [tmp_path / "out"])
    with pytest.raises(ConfigError, match=r"`tokenizer_roots` .*bundled is outside the folders"):
        form_config(dataclasses.replace(form, roots=roots))
    assert form_config(dataclasses.replace(form, roots=roots, advanced_yaml="")).tokenizer_roots == [
        str(host)
    ]
