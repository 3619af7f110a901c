"""Crashes lose nothing: kill -9 at random points and inside saves, a full disk during a save, NaN loss, out of
memory and a training child that dies, each on real training of the tiny SD1 model in a child process.

The children run `tests/crash_child.py` (the real CLI with a planted SIGKILL / file-size or memory limit) with
one CPU thread each, so that an interrupted chain of runs and an uninterrupted one do the same arithmetic.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from helpers_train import make_dataset, tiny_config
from safetensors import safe_open
from safetensors.torch import load_file

from lorascripts.config import config_from_dict
from lorascripts.errors import StorageError, TrainingError
from lorascripts.fileio import write_synced
from lorascripts.host.jobs import TrainingJob
from lorascripts.run.events import read_events
from lorascripts.run.state import list_checkpoints, load_checkpoint
from lorascripts.train.trainer import train

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "crash_child.py"
SEED = int(os.environ.get("LS_CRASH_SEED", "20261201"))


def _child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return {**env, **extra}


def _write_config(cfg: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _start(config: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CHILD), "train", "--config", str(config)],
        cwd=str(REPO),
        env=_child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run(config: Path, timeout: float = 240, **env: str) -> tuple[int, str]:
    proc = _start(config, **env)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _kill_after_event(config: Path, out_dir: Path, kind: str, step: int, delay: float) -> int:
    """Start a run, SIGKILL it `delay` seconds after its `kind` event for `step` appears."""
    proc = _start(config)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(e["event"] == kind and e.get("step") == step for e in read_events(out_dir / "events.jsonl")):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.communicate(timeout=60)
    return proc.returncode


def _leftovers(out_dir: Path) -> list[str]:
    return sorted(
        p.name for p in out_dir.rglob(".*") if p.name.endswith(".partial") or p.name.startswith(".tmp-")
    )


def _assert_nothing_half(out_dir: Path) -> None:
    """Every file a user or `resume: auto` looks at is whole: LoRAs load, every checkpoint loads."""
    for lora in out_dir.glob("*.safetensors"):
        with safe_open(str(lora), "pt") as fh:
            assert [fh.get_tensor(k) for k in fh.keys()], lora
    for checkpoint in list_checkpoints(out_dir):
        load_checkpoint(checkpoint)  # raises TrainingError on a half checkpoint
    for line in (out_dir / "events.jsonl").read_text(encoding="utf-8").splitlines():
        json.loads(line)  # a torn last line is ended before the next run appends


@contextmanager
def _one_thread() -> Iterator[None]:
    """Train in this process with one thread, like the children: the same arithmetic, and no oversubscribed
    cores on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _reference_run(cfg: dict) -> dict:
    """The uninterrupted run."""
    with _one_thread():
        return load_file(str(train(config_from_dict(cfg)).lora_path))


def _fill_the_disk(config: Path, out: Path) -> None:
    """Two resumed runs whose save hits a file-size limit (EFBIG, as a full disk gives ENOSPC): first while
    writing the LoRA, then while writing the checkpoint's optimizer state. Each ends with our StorageError
    (exit code 6) naming the file, and leaves the newest checkpoint and every LoRA as they were."""
    checkpoints = [c.name for c in list_checkpoints(out)]
    loras = {p.name: load_file(str(p)) for p in out.glob("*.safetensors")}
    lora_size = max(p.stat().st_size for p in out.glob("*.safetensors"))
    for limit, failing in ((lora_size // 2, "tiny-step"), (lora_size + 4096, "optimizer.safetensors")):
        code, log = _run(config, LS_FSIZE_LIMIT=str(limit))
        assert code == 6, log
        assert "no space left / file too large while writing" in log and failing in log, log
        error = [e for e in read_events(out / "events.jsonl") if e["event"] == "error"][-1]
        assert error["kind"] == "StorageError" and failing in error["message"]
        assert [c.name for c in list_checkpoints(out)] == checkpoints
        assert not _leftovers(out), "a failed write removes its temporary file"
        _assert_nothing_half(out)
        for name, tensors in loras.items():
            again = load_file(str(out / name))
            assert all((again[k] == tensors[k]).all() for k in tensors), name


def test_kill_9_and_a_full_disk_then_resume_ends_with_the_same_weights(tiny_sd1, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = make_dataset(tmp_path / "data", n=4)
    settings = dict(max_train_steps=14, save_steps=2, resume="auto")  # saves left after any kill below
    expected = _reference_run(tiny_config(tiny_sd1, data, tmp_path / "reference", **settings))
    out = tmp_path / "out"
    config = _write_config(tiny_config(tiny_sd1, data, out, **settings), tmp_path / "c")
    # a kill at a random moment after the first checkpoint, then kills planted inside saves: a LoRA complete
    # in its temporary file but not renamed; a checkpoint folder with some or all of its files, not renamed
    code = _kill_after_event(config, out, "step", rng.randint(3, 5), rng.uniform(0.0, 0.3))
    assert code == -signal.SIGKILL
    _assert_nothing_half(out)
    plans = [
        f"os.rename|.partial|{rng.randint(1, 2)}",
        rng.choice(["open|/.tmp-|1", "open|/.tmp-|2", "open|/.tmp-|3", "os.rename|/.tmp-|1"]),
    ]
    rng.shuffle(plans)
    for plan in plans:
        newest = list_checkpoints(out)[-1].name
        code, log = _run(config, LS_CRASH_AT=plan)
        assert code == -signal.SIGKILL, f"{plan}: the planted kill did not fire\n{log}"
        assert _leftovers(out), f"{plan}: the kill did not land inside a save"
        _assert_nothing_half(out)
        resumed = [e for e in read_events(out / "events.jsonl") if e["event"] == "resumed"][-1]
        assert Path(resumed["checkpoint"]).name == newest, "resumed from the newest whole checkpoint"
    _fill_the_disk(config, out)
    code, log = _run(config)
    assert code == 0, log
    assert not _leftovers(out), "the next start removed what the kills left"
    _assert_nothing_half(out)
    final = load_file(str(out / "tiny.safetensors"))
    assert final.keys() == expected.keys()
    worst = max((final[k] - expected[k]).abs().max().item() for k in final)
    assert worst <= 1e-6, f"resumed weights differ from an uninterrupted run by {worst}"


def test_nan_loss_stops_with_its_cause_and_the_last_good_checkpoint(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=4)
    out = tmp_path / "out"
    cfg = tiny_config(
        tiny_sd1, data, out, max_train_steps=40, save_steps=2, learning_rate=10.0, max_grad_norm=0
    )
    with _one_thread(), pytest.raises(TrainingError, match="loss became nan") as err:
        train(config_from_dict(cfg))
    error = [e for e in read_events(out / "events.jsonl") if e["event"] == "error"][-1]
    assert error["kind"] == "TrainingError" and error["message"] == str(err.value)
    checkpoints = list_checkpoints(out)
    assert checkpoints and f"last good checkpoint is {checkpoints[-1]}" in error["message"]
    assert "Lower learning_rate" in error["message"]
    for checkpoint in checkpoints:  # nothing non-finite was saved over good checkpoints
        _, network, *_ = load_checkpoint(checkpoint)
        assert all(t.isfinite().all() for t in network.values()), checkpoint


def test_out_of_memory_says_what_to_change(tiny_sd1, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=2, size=512)
    out = tmp_path / "out"
    cfg = tiny_config(tiny_sd1, data, out, resolution=512, batch_size=2, max_train_steps=2)
    code, log = _run(_write_config(cfg, tmp_path), LS_AS_LIMIT_MB="300")
    assert code == 5, log
    assert "out of memory" in log and "batch_size" in log and "gradient_checkpointing" in log, log
    error = [e for e in read_events(out / "events.jsonl") if e["event"] == "error"][-1]
    assert error["kind"] == "TrainingError" and "out of memory" in error["message"]


def test_a_killed_training_child_is_named_and_gets_no_secrets(tiny_sd1, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LS_TEST_API_TOKEN", "do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = make_dataset(tmp_path / "data", n=2)
    job = TrainingJob(
        tiny_config(tiny_sd1, data, tmp_path / "x", max_train_steps=50),
        tmp_path / "work",
        tmp_path / "loras",
        "k",
    )
    job.start()
    names: set[str] = set()

    def on_event(event: dict) -> None:  # the child is running Python by its first event: read its environment
        if not names:
            environ = Path(f"/proc/{job.process.pid}/environ").read_bytes().split(b"\0")
            names.update(item.split(b"=", 1)[0].decode() for item in environ if item)
        if event["event"] == "step":
            job.process.send_signal(signal.SIGKILL)

    with pytest.raises(TrainingError) as err:
        job.wait(on_event=on_event, poll_seconds=0.05)
    assert "killed by SIGKILL" in str(err.value) and "out of memory" in str(err.value)
    assert "LS_TEST_API_TOKEN" not in names and "AWS_SECRET_ACCESS_KEY" not in names
    assert {"PATH", "HF_HUB_OFFLINE", "OMP_NUM_THREADS", "PYTHONPATH"} <= names, names
    assert not (tmp_path / "loras" / "k.safetensors").exists()


def test_no_space_left_is_our_storage_error() -> None:
    """/dev/full answers every write with ENOSPC, the error a full disk gives (the runs above use EFBIG)."""
    with pytest.raises(StorageError, match="no space left / file too large while writing /dev/full"):
        write_synced(Path("/dev/full"), b"x" * 4096)
