"""Shared fixtures: tiny real SD1/SD2/SDXL models built once per test session (no downloads)."""

from __future__ import annotations

import pytest
from tiny_models import TinyModel, build_tiny, build_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def _model(family: str, tmp_path_factory, tokenizer) -> TinyModel:
    return build_tiny(family, tmp_path_factory.mktemp(f"tiny_{family}"), tokenizer)


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory, tiny_tokenizer) -> TinyModel:
    return _model("sd1", tmp_path_factory, tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_sd2(tmp_path_factory, tiny_tokenizer) -> TinyModel:
    return _model("sd2", tmp_path_factory, tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory, tiny_tokenizer) -> TinyModel:
    return _model("sdxl", tmp_path_factory, tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_zimage(tmp_path_factory):
    from tiny_zimage import build_tiny_zimage

    return build_tiny_zimage(tmp_path_factory.mktemp("zimage"))


@pytest.fixture(scope="module")
def one_cpu_thread():
    """torch on one CPU thread for a module of tiny-model renders, as training picks for tiny models: on a busy
    2-core machine two threads wait on each other (a 64 px FLUX toy render: 43 s instead of 2 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
