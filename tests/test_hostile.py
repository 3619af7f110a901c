"""Hostile requests: paths that try to leave the allowed folders, hand-written DATASET values, config keys that
point elsewhere, and bad bodies for our HTTP route are refused with a clear message, in a real ComfyUI 0.3.75
on 127.0.0.1; a failing training prompt shows its cause and the next prompt works on the same server. Plus
the path rules on their own and a scan of the shipped code for shells, pickles and remote code."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import test_webui
from comfy_host import ComfyServer
from helpers_train import make_dataset

from lorascripts.config import config_from_dict
from lorascripts.errors import ConfigError
from lorascripts.host.safety import (
    absolute_paths_allowed,
    check_request_config,
    confine,
    is_loopback,
    links_leaving,
)

REPO = Path(__file__).resolve().parent.parent
standin_webui = test_webui.webui  # the stand-in WebUI modules, as a fixture of this module
SHIPPED = [
    "lorascripts",
    "nodes",
    "lora_scripts_webui",
    "scripts",
    "install.py",
    "__init__.py",
    "train.py",
    "tools",
]
FORBIDDEN = {
    "shell=True": r"shell\s*=\s*True",
    "os.system": r"\bos\.system\s*\(",
    "os.popen": r"\bos\.popen\s*\(",
    "trust_remote_code=True": r"trust_remote_code\s*=\s*True",
    "pickle.load": r"\bpickle\.loads?\s*\(",
    "eval/exec": r"(?<![\w.])(eval|exec)\s*\(",
}


def _shipped_python() -> list[Path]:
    files: list[Path] = []
    for entry in SHIPPED:
        path = REPO / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def _arguments(text: str, start: int) -> str:
    """The text of a call's arguments, from just after its `(` to the matching `)`."""
    depth = 1
    for end in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end]
    return text[start:]


def test_shipped_code_has_no_shell_pickle_or_remote_code() -> None:
    files = _shipped_python()
    assert len(files) > 50
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for name, pattern in FORBIDDEN.items():
            found += [f"{path.relative_to(REPO)}: {name}" for _ in re.finditer(pattern, text)]
        for call in re.finditer(r"torch\.load\(", text):
            if "weights_only=True" not in _arguments(text, call.end()):
                found.append(f"{path.relative_to(REPO)}: torch.load without weights_only=True")
    assert not found, found


def test_path_rules(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "data").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (allowed / "data" / "ok.png").write_bytes(b"x")
    (allowed / "data" / "link.png").symlink_to(outside / "secret.png")
    (allowed / "data" / "inner.png").symlink_to(allowed / "data" / "ok.png")
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    assert confine(allowed / "data", [allowed], "x") == (allowed / "data").resolve()
    for bad in (allowed / "data" / ".." / ".." / "outside", allowed / "escape", "/etc", "", "a\0b"):
        with pytest.raises(ConfigError):
            confine(bad, [allowed], "x")
    assert links_leaving(allowed / "data", [allowed]) == [allowed / "data" / "link.png"]
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost,127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("0.0.0.0,::") and not is_loopback("192.168.1.5")
    assert absolute_paths_allowed("127.0.0.1", {}) and not absolute_paths_allowed("0.0.0.0", {})
    assert absolute_paths_allowed("0.0.0.0", {"LORA_SCRIPTS_ALLOW_ABSOLUTE_PATHS": "1"})
    base = {"base_model": str(allowed / "m.safetensors"), "train_data_dir": str(allowed / "data")}
    fixed = dict(base)
    check_request_config(config_from_dict(base), fixed, [allowed], [allowed / "work"])
    inside_roots = config_from_dict({**base, "tokenizer_roots": [str(allowed), str(allowed / "data")]})
    check_request_config(inside_roots, fixed, [allowed], [allowed / "work"])  # each entry checked, all inside
    hostile = [
        {"cache_dir": str(outside)},  # a write outside
        {"cache_dir": str(allowed / "data")},  # a write inside a read-only folder
        {"metadata_path": "/etc/passwd"},
        {"initial_lora": str(allowed / ".." / "outside" / "x.safetensors")},
        {"tokenizer_path": str(allowed / "escape")},
        {"tokenizer_roots": [str(allowed), str(allowed / "escape")]},  # every entry of a list of paths
        {"resume": str(outside)},
    ]
    for extra in hostile:
        with pytest.raises(ConfigError):
            check_request_config(config_from_dict({**base, **extra}), fixed, [allowed], [allowed / "work"])
    with pytest.raises(ConfigError, match="set by the node"):
        swapped = {**base, "base_model": "org/any-hub-model"}
        check_request_config(config_from_dict(swapped), fixed, [allowed], [allowed / "work"])


# --- a real ComfyUI --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def comfy(tmp_path_factory, tiny_sd1):
    base = tmp_path_factory.mktemp("comfy_hostile")
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "tiny-sd1.safetensors").symlink_to(tiny_sd1.single_file)
    shutil.copytree(tiny_sd1.tokenizer_dir, base / "models" / "tokenizers" / "tiny")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")  # the server and its training children: no oversubscribed cores
        server = ComfyServer(base)
    yield server
    server.stop()


def _error_of(server: ComfyServer, workflow: dict) -> str:
    entry = server.wait(server.queue(workflow), timeout=300)
    assert entry["status"]["status_str"] == "error", entry["status"]
    return next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")["exception_message"]


def _load(folder: str, absolute: bool = False) -> dict:
    return {
        "1": {
            "class_type": "LoraScriptsLoadDataset",
            "inputs": {"folder": folder, "allow_absolute_path": absolute},
        },
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 1]}},
    }


def _train(dataset: object, lora: str, advanced: str = "", learning_rate: float = 1e-3) -> dict:
    return {
        "1": {
            "class_type": "LoraScriptsTrainLoRA",
            "inputs": {
                "ckpt_name": "tiny-sd1.safetensors",
                "dataset": dataset,
                "lora_name": lora,
                "preset": "custom",
                "rank": 4,
                "alpha": 4.0,
                "steps": 4,
                "epochs": 1,
                "learning_rate": learning_rate,
                "resolution": 64,
                "batch_size": 2,
                "trigger_word": "zk",
                "advanced_yaml": advanced,
            },
        }
    }


def _outside_files(tmp_path_factory) -> Path:
    secret = tmp_path_factory.mktemp("secret")
    make_dataset(secret, n=2)
    (secret / "metadata.csv").write_text("file_name,caption\nimg_00.png,TOP-SECRET\n", encoding="utf-8")
    return secret


def test_node_inputs_cannot_leave_the_allowed_folders(comfy, tmp_path_factory) -> None:
    server = comfy
    secret = _outside_files(tmp_path_factory)
    inputs = server.base / "input"
    make_dataset(inputs / "fine", n=2)
    (inputs / "escape").symlink_to(secret, target_is_directory=True)
    make_dataset(inputs / "mixed", n=2)
    (inputs / "mixed" / "stolen.png").symlink_to(secret / "img_00.png")
    refused = {
        os.path.relpath(secret, inputs): "outside ComfyUI's input folder",
        str(secret): "allow_absolute_path",
        "escape": "outside ComfyUI's input folder",
        "mixed": "symlinks that point outside",
    }
    for folder, message in refused.items():
        assert message in _error_of(server, _load(folder)), folder
    assert "stolen.png" in _error_of(server, _load(str(inputs / "mixed"), absolute=True))
    # a DATASET value written by hand instead of coming from Load Dataset
    forged = {"folder": str(secret), "metadata_path": None, "files": ["img_00.png"], "captions": {}}
    assert "outside the folders" in _error_of(server, _train(forged, "forged"))
    steal = {**forged, "folder": str(inputs / "fine"), "metadata_path": str(secret / "metadata.csv")}
    caption = {
        "1": {
            "class_type": "LoraScriptsAutoCaption",
            "inputs": {"dataset": steal, "captioner": "wd14", "trigger_word": "", "mode": "overwrite"},
        }
    }
    assert "metadata_path" in _error_of(server, caption)
    # config keys in the advanced YAML that read or write elsewhere
    dataset = {"folder": str(inputs / "fine"), "metadata_path": None}  # the node's own metadata_path wins
    for advanced, message in {
        f"cache_dir: {secret}": "`cache_dir`",
        f"metadata_path: {secret / 'metadata.csv'}": "`metadata_path`",
        f"initial_lora: {secret / 'x.safetensors'}": "`initial_lora`",
        "pretrained_model_name_or_path: org/model": "mean the same thing",
    }.items():
        assert message in _error_of(server, _train(dataset, "adv", advanced)), advanced
    written = [p for p in server.base.rglob("*") if "TOP-SECRET" in _text(p)]
    assert not written, written
    assert sorted(p.name for p in secret.iterdir()) == ["img_00.png", "img_01.png", "metadata.csv"]


def _text(path: Path) -> str:
    if not path.is_file() or path.is_symlink() or path.stat().st_size > 1 << 20:
        return ""
    return path.read_text(encoding="utf-8", errors="replace")


def _post(server: ComfyServer, data: bytes) -> tuple[int, str]:
    request = urllib.request.Request(
        server.url + "/lora_scripts/caption", data, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_caption_route_validates_every_body(comfy, tmp_path_factory) -> None:
    server = comfy
    secret = _outside_files(tmp_path_factory)
    captions = server.base / "output" / "lora-scripts" / "captions"
    good = captions / "ds-1" / "metadata.csv"
    good.parent.mkdir(parents=True)
    good.write_text("file_name,caption\nimg_00.png,old\n", encoding="utf-8")
    (captions / "ds-2").mkdir()
    (captions / "ds-2" / "metadata.csv").symlink_to(secret / "metadata.csv")

    def body(path: object, file: object = "img_00.png", caption: object = "new") -> bytes:
        return json.dumps({"metadata_path": path, "file": file, "caption": caption}).encode()

    hostile = {
        b"not json": 400,
        b"[1, 2]": 400,
        b'"a string"': 400,
        body(str(good), file=["img_00.png"]): 400,
        body(123): 400,
        body(str(good), caption={"x": 1}): 400,
        body(str(good), caption="x" * 10_000): 400,
        body(str(good) + "\0"): 400,
        body(str(captions / "ds-1" / ".." / ".." / ".." / ".." / secret.name / "metadata.csv")): 403,
        body(str(secret / "metadata.csv")): 403,
        body(str(captions / "ds-2" / "metadata.csv")): 403,
        body("output/lora-scripts/captions/ds-1/metadata.csv"): 403,
        body(str(good), file="../../etc/passwd"): 404,
        b'{"metadata_path": "' + b"a" * 200_000 + b'"}': 413,
    }
    for data, status in hostile.items():
        code, text = _post(server, data)
        assert code == status, (data[:80], code, text)
        assert "TOP-SECRET" not in text
    assert "TOP-SECRET" in (secret / "metadata.csv").read_text(encoding="utf-8")
    assert _post(server, body(str(good))) == (
        200,
        json.dumps({"ok": True, "file": "img_00.png", "caption": "new"}),
    )
    assert "img_00.png,new" in good.read_text(encoding="utf-8")
    assert server.get("/system_stats")  # still serving


def test_failed_training_shows_its_cause_and_the_next_prompt_works(comfy) -> None:
    server = comfy
    make_dataset(server.base / "input" / "train_me", n=4)
    loader = {"class_type": "LoraScriptsLoadDataset", "inputs": {"folder": "train_me"}}
    tokenizer = server.base / "models" / "tokenizers" / "tiny"
    advanced = (
        f"tokenizer_path: {tokenizer}\nmixed_precision: 'no'\nresolution: 32\nseed: 3\nmax_grad_norm: 0\n"
    )
    diverging = {"2": loader, **_train(["2", 0], "diverges", advanced + "learning_rate: 10.0\n")}
    diverging["1"]["inputs"]["steps"] = 40
    message = _error_of(server, diverging)
    assert "exit code 5" in message and "nan" in message.lower(), message
    assert not (server.base / "models" / "loras" / "diverges.safetensors").exists()
    working = {"2": loader, **_train(["2", 0], "works", advanced)}
    entry = server.wait(server.queue(working), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["1"]["lora_scripts_result"][0]["lora"] == "works.safetensors"
    assert (server.base / "models" / "loras" / "works.safetensors").is_file()


def test_webui_reachable_from_the_network_stays_in_its_folder(
    standin_webui, tiny_sd1, tmp_path_factory
) -> None:
    from lora_scripts_webui.actions import TrainForm, UserError, build_config, dataset_folder

    root, flags = standin_webui["root"], standin_webui["shared"].cmd_opts
    elsewhere = make_dataset(tmp_path_factory.mktemp("elsewhere"), n=2)
    inside_root = make_dataset(root / "datasets" / "mine", n=2)
    checkpoint = test_webui._install_checkpoint(root, tiny_sd1)
    assert dataset_folder(str(elsewhere)) == elsewhere  # a WebUI only this machine reaches: any folder
    flags.listen = True
    with pytest.raises(UserError, match="reachable from the network"):
        dataset_folder(str(elsewhere))
    assert dataset_folder(str(inside_root)) == inside_root
    form = TrainForm(dataset=str(inside_root), checkpoint=checkpoint, lora_name="x", steps=4)
    assert build_config(form).train_data_dir == str(inside_root)
    for advanced in (f"cache_dir: {elsewhere}", f"initial_lora: {elsewhere / 'x.safetensors'}"):
        with pytest.raises(UserError, match="reachable from the network"):
            build_config(TrainForm(**{**form.__dict__, "advanced_yaml": advanced}))
    (inside_root / "link.png").symlink_to(elsewhere / "img_00.png")
    with pytest.raises(UserError, match="symlinks"):
        dataset_folder(str(inside_root))
    flags.enable_insecure_extension_access = True  # the WebUI's own switch for trusting its users
    assert dataset_folder(str(elsewhere)) == elsewhere
