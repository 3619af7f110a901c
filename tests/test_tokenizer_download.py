"""Single-file checkpoints need the CLIP tokenizer: with network it is downloaded (its files only) into the
Hugging Face cache, found there offline afterwards, and without network or cache the error says what to do.
The Hub is a stand-in on 127.0.0.1 (tests/hub_standin.py) reached through HF_ENDPOINT by huggingface_hub's own
download code, in a fresh HF_HOME, in a child process as a user's run would be."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

from hub_standin import HubStandin, folder_files

from lorascripts.models.tokenizers_find import HUB_REPOS, TOKENIZER_FILES

REPO = Path(__file__).resolve().parent.parent
LOAD = (
    "import sys\nfrom lorascripts.models.loader import load_base_model\n"
    "base = load_base_model(sys.argv[1])\nprint('vocab', len(base.tokenizers[0]))\n"
)


def _start(checkpoint: Path, hf_home: Path, **env: str) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    clean.update(PYTHONPATH=str(REPO), HF_HOME=str(hf_home), **env)
    return subprocess.Popen(
        [sys.executable, "-c", LOAD, str(checkpoint)], env=clean, stdout=PIPE, stderr=PIPE, text=True
    )


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _load(checkpoint: Path, hf_home: Path, **env: str) -> subprocess.CompletedProcess:
    return _finish(_start(checkpoint, hf_home, **env))


def test_clip_tokenizer_is_downloaded_once_then_found_offline(tiny_sd1, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"  # alone in its folder: no tokenizer/ beside it
    shutil.copyfile(tiny_sd1.single_file, checkpoint)
    files = folder_files(tiny_sd1.tokenizer_dir)
    files["special_tokens_map.json"] = json.dumps({"pad_token": "<|endoftext|>"}).encode()
    files["pytorch_model.bin"] = b"x" * 1000  # the model weights are on the Hub too, and never fetched
    hub = HubStandin({HUB_REPOS[0]: files})
    # a fresh cache, network allowed but the endpoint unreachable (a port bound by nobody listening: connection
    # refused). huggingface_hub retries a failed lookup with backoff for ~25 s before it gives up, so this run
    # starts first and waits in the background while the others run.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        unreachable_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        unreachable_run = _start(checkpoint, tmp_path / "hf_unreachable", HF_ENDPOINT=unreachable_url)
        try:
            first = _load(checkpoint, tmp_path / "hf", HF_ENDPOINT=hub.url)
        finally:
            hub.stop()
        assert first.returncode == 0, first.stderr[-3000:]
        vocab = json.loads(files["vocab.json"])
        assert f"vocab {len(vocab)}" in first.stdout
        fetched = {path.rsplit("/", 1)[-1] for _, path in hub.requests if "/resolve/" in path}
        assert fetched == set(TOKENIZER_FILES), hub.requests  # the tokenizer files only, not the weights
        # the server is gone: offline, the cached copy is used; a fresh cache offline fails (both at once)
        again_run = _start(checkpoint, tmp_path / "hf", HF_HUB_OFFLINE="1")
        offline = _load(checkpoint, tmp_path / "hf_empty", HF_HUB_OFFLINE="1")
        again = _finish(again_run)
        unreachable = _finish(unreachable_run)
    assert again.returncode == 0 and f"vocab {len(vocab)}" in again.stdout, again.stderr[-3000:]
    assert offline.returncode != 0 and "ModelError" in offline.stderr
    assert "HF_HUB_OFFLINE" in offline.stderr and "tokenizer_path" in offline.stderr
    assert unreachable.returncode != 0 and "ModelError" in unreachable.stderr, unreachable.stderr[-3000:]
    assert f"downloading {HUB_REPOS[0]}'s tokenizer files failed" in unreachable.stderr
    assert "tokenizer_path" in unreachable.stderr
