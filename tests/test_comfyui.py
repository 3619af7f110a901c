"""Our nodes in a real ComfyUI 0.3.75 on 127.0.0.1 (CPU): discovery, the example training workflow end to end
with a full-size SD1.5-architecture checkpoint, reuse, cancel, failures with their cause."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from comfy_host import (
    ComfyServer,
    WebsocketLog,
    cancel_keeps_a_checkpoint,
    rerun_resumes,
    sd15_random_checkpoint,
)
from helpers_train import make_dataset
from safetensors import safe_open
from tiny_captioners import build_tiny_wd14

REPO = Path(__file__).resolve().parent.parent

OUR_NODES = {
    "LoraScriptsLoadDataset",
    "LoraScriptsAutoCaption",
    "LoraScriptsTrainLoRA",
    "LoraScriptsLoadLoRA",
    "LoraScriptsPromptTags",
    "LoraScriptsInspectLoRA",
    "LoraScriptsMergeLoRAs",
    "LoraScriptsResizeLoRA",
    "LoraScriptsMergeIntoCheckpoint",
    "LoraScriptsGenerateText",
}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")
    checkpoint = sd15_random_checkpoint()
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "sd15-random.safetensors").symlink_to(checkpoint)
    server = ComfyServer(base)
    events = WebsocketLog(server.port, server.client_id)
    yield server, events
    events.close()
    server.stop()


TRAIN_EXAMPLE = "lora-scripts train a style and use it"
CKPT = "sd15-random.safetensors"


def _example(server: ComfyServer, title: str) -> dict:
    """A shipped example workflow as ComfyUI's editor loads it: the UI file -> an API prompt, read with the live
    node definitions (so widget order and names must still match what the nodes declare)."""
    from workflow_format import to_api

    committed = json.loads((REPO / "example_workflows" / f"{title}.json").read_text(encoding="utf-8"))
    return to_api(committed, server.get("/object_info"))


def _workflow(server: ComfyServer, tagger: str, lora: str, steps: int, folder: str = "ls_data") -> dict:
    """The shipped train-a-style example, made small: the test checkpoint and dataset, the tiny WD14 tagger,
    64 px, a few steps, rank 4."""
    advanced = "mixed_precision: 'no'\ndataset_checks: warn\nsave_precision: fp16\ntrain_text_encoder: true\n"
    prompt = _example(server, TRAIN_EXAMPLE)
    prompt["1"]["inputs"]["ckpt_name"] = CKPT
    prompt["2"]["inputs"]["folder"] = folder
    prompt["3"]["inputs"].update(
        captioner="wd14", trigger_word="zk", mode="overwrite", model=tagger, batch_size=2
    )
    train = dict(lora_name=lora, rank=4, alpha=4.0, steps=steps, epochs=1, learning_rate=1e-4, resolution=64)
    prompt["4"]["inputs"].update(
        ckpt_name=CKPT, trigger_word="zk", advanced_yaml=advanced, sample_prompt="", **train
    )
    prompt["5"]["inputs"].update(lora_name=f"{lora}.safetensors", strength_model=1.0, strength_clip=1.0)
    prompt["6"]["inputs"]["text"], prompt["7"]["inputs"]["text"] = "zk, a red circle", ""
    prompt["8"]["inputs"].update(width=64, height=64)
    prompt["9"]["inputs"].update(seed=1, steps=2, cfg=5.0)
    prompt["11"]["inputs"]["filename_prefix"] = "ls_test"
    return prompt


def test_nodes_are_listed(comfy) -> None:
    server, _ = comfy
    info = server.get("/object_info")
    assert OUR_NODES <= set(info), server.server_log()[-3000:]
    train = info["LoraScriptsTrainLoRA"]["input"]["required"]
    for node in OUR_NODES:
        inputs = {**info[node]["input"]["required"], **info[node]["input"].get("optional", {})}
        assert all("tooltip" in spec[1] for spec in inputs.values()), node
    assert train["ckpt_name"][0] == "COMBO"  # the V3 node API's form of a list widget
    assert "sd15-random.safetensors" in train["ckpt_name"][1]["options"]
    ours = [line for line in server.server_log().splitlines() if "custom_nodes/lora-scripts" in line]
    assert ours and not any("IMPORT FAILED" in x or "Skip" in x or "comfy_entrypoint" in x for x in ours), (
        ours
    )


def test_train_and_use_in_one_graph(comfy, tmp_path_factory) -> None:
    server, events = comfy
    tagger = build_tiny_wd14(tmp_path_factory.mktemp("wd14"))[0]
    make_dataset(server.base / "input" / "ls_data", n=3, size=64)
    entry = server.wait(server.queue(_workflow(server, str(tagger), "ls_comfy", steps=2)))
    log = server.server_log()
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:] + log[-3000:]
    lora = server.base / "models" / "loras" / "ls_comfy.safetensors"
    assert lora.is_file() and (server.base / "models" / "loras" / "ls_comfy.json").is_file()
    with safe_open(str(lora), "pt") as fh:
        assert fh.metadata()["ss_output_name"] == "ls_comfy" and any(
            k.startswith("lora_te_") for k in fh.keys()
        )
    assert "lora key not loaded" not in log and " ERROR " not in log, log[-3000:]
    assert list((server.base / "output").glob("ls_test_*.png"))
    report = entry["outputs"]["5"]["text"][0]
    assert report.endswith("every key applied"), report
    steps = [e for e in events.of("lora_scripts.progress") if e.get("event") == "step"]
    assert [e["step"] for e in steps][-2:] == [1, 2] and events.of("progress")
    kinds = [e.get("event") for e in events.of("lora_scripts.progress")]
    estimate = next(e for e in events.of("lora_scripts.progress") if e.get("event") == "estimate")
    assert kinds.index("estimate") < kinds.index("step") and estimate["summary"].startswith("estimate: ")
    captions = entry["outputs"]["3"]["lora_scripts_captions"][0]
    assert len(captions["rows"]) == 3 and all(r["caption"].startswith("zk") for r in captions["rows"])
    # queue again with an input that ComfyUI sees as changed but that does not change what is learned
    # (log frequency): the node runs, and the finished LoRA is reused instead of retrained
    mtime = lora.stat().st_mtime_ns
    rerun = _workflow(server, str(tagger), "ls_comfy", steps=2)
    rerun["4"]["inputs"]["advanced_yaml"] += "log_every_n_steps: 2\n"
    again = server.wait(server.queue(rerun))
    assert again["status"]["status_str"] == "success"
    assert (
        again["outputs"]["4"]["lora_scripts_result"][0]["reused"] is True and lora.stat().st_mtime_ns == mtime
    )
    # the caption editor route saves an edit; paths outside our output folder are refused
    saved = server.post(
        "/lora_scripts/caption",
        {"metadata_path": captions["metadata_path"], "file": "img_00.png", "caption": "zk, edited"},
    )
    assert saved["caption"] == "zk, edited"
    import urllib.error

    with pytest.raises(urllib.error.HTTPError):
        server.post(
            "/lora_scripts/caption",
            {
                "metadata_path": str(server.base / "input" / "ls_data" / "metadata.csv"),
                "file": "img_00.png",
                "caption": "x",
            },
        )


def test_example_workflows_match_and_run(comfy, tmp_path_factory) -> None:
    """The three shipped workflows match their definitions and the live nodes; the train-a-style one is what
    every training test here runs (`_workflow`); the other two run here as loaded from their files."""
    from example_prompts import EXAMPLES, lora_prompt_tags
    from workflow_format import to_api, to_ui

    server, _ = comfy
    info = server.get("/object_info")
    for title, build in EXAMPLES.items():
        committed = json.loads((REPO / "example_workflows" / f"{title}.json").read_text(encoding="utf-8"))
        assert committed == json.loads(json.dumps(to_ui(build(), info))), (
            f"{title}: regenerate example_workflows"
        )
        api, expected = to_api(committed, info), build()
        assert api.keys() == expected.keys(), title
        for key, node in expected.items():  # the UI form also carries the defaults of optional widgets
            assert all(api[key]["inputs"][k] == v for k, v in node["inputs"].items()), (title, key)
    assert (server.base / "models" / "loras" / "ls_comfy.safetensors").is_file(), (
        "needs the LoRA trained above"
    )
    prompt = to_api(to_ui(lora_prompt_tags(), info), info)
    prompt["1"]["inputs"]["ckpt_name"] = "sd15-random.safetensors"
    prompt["2"]["inputs"]["text"] = "zk, a red circle <lora:ls_comfy:0.7> <lora:ls_comfy:0.2:0.5>"
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["6"]["inputs"]["steps"] = 2
    entry = server.wait(server.queue(prompt))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-2000:]
    report = entry["outputs"]["2"]["text"][0]
    assert report.count("every key applied") == 2, report
    tagger = build_tiny_wd14(tmp_path_factory.mktemp("wd14ex"))[0]
    caption = _example(server, "lora-scripts caption a folder")
    caption["1"]["inputs"]["folder"] = "ls_data"  # the folder the training test captioned
    caption["2"]["inputs"].update(captioner="wd14", model=str(tagger), mode="overwrite", trigger_word="zkex")
    entry = server.wait(server.queue(caption))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-2000:]
    rows = entry["outputs"]["2"]["lora_scripts_captions"][0]["rows"]
    assert len(rows) == 3 and all(r["caption"].startswith("zkex") for r in rows)


def test_front_end_renders_chart_and_caption_editor(comfy, tmp_path_factory) -> None:
    from browser import Browser
    from workflow_format import to_ui

    server, _ = comfy
    tagger = build_tiny_wd14(tmp_path_factory.mktemp("wd14ui"))[0]
    info = server.get("/object_info")
    workflow = to_ui(
        _workflow(server, str(tagger), "ls_comfy", steps=2), info
    )  # the LoRA trained above: reused
    artifacts = REPO / ".cache" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    for setting in ("Comfy.TutorialCompleted",):  # no first-run template dialog over the graph
        req = urllib.request.Request(
            f"{server.url}/settings/{setting}", b"true", {"Content-Type": "application/json"}
        )
        urllib.request.urlopen(req, timeout=30).close()
    browser = Browser()
    try:
        browser.call("Page.navigate", url=server.url)
        browser.wait_for("!!(window.app && window.app.graph && window.app.graph._nodes)")
        browser.evaluate(f"window.app.loadGraphData({json.dumps(workflow)})")
        assert browser.wait_for("document.querySelectorAll('canvas.lora-scripts-loss-chart').length") == 1
        browser.evaluate("window.app.queuePrompt(0)")
        rows = browser.wait_for(
            "document.querySelectorAll('textarea.lora-scripts-caption').length", timeout=600
        )
        assert rows == 3
        assert browser.wait_for(
            "[...document.querySelectorAll('textarea.lora-scripts-caption')].every(t => t.value.startsWith('zk'))"
        )
        browser.evaluate("document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click())")
        shot = browser.screenshot(artifacts / "comfyui-lora-scripts.png")
        assert shot.stat().st_size > 10_000
    finally:
        browser.close()
        server.wait_idle()  # the prompt the page queued must not overlap the next test


def test_cancel_keeps_a_checkpoint_and_the_rerun_resumes(comfy, tmp_path_factory) -> None:
    """Cancel after a step, then queue the same graph again (its captioning and training part): the run resumes
    from the checkpoint Cancel kept (FLUX's in test_flux_comfyui.py, with the same helpers)."""
    server, events = comfy
    tagger = build_tiny_wd14(tmp_path_factory.mktemp("wd14b"))[0]
    make_dataset(server.base / "input" / "ls_data2", n=2, size=64)
    workflow = _workflow(server, str(tagger), "ls_cancel", steps=3, folder="ls_data2")
    prompt = {k: workflow[k] for k in ("2", "3", "4")}  # dataset, captions, Train LoRA
    prompt["4"]["inputs"]["advanced_yaml"] = "mixed_precision: bf16\ndataset_checks: warn\n"  # faster steps
    stopped = cancel_keeps_a_checkpoint(server, events, prompt)  # a step takes seconds: stops at 1 or 2
    lora = rerun_resumes(server, events, prompt, stopped)
    with safe_open(str(lora), "pt") as fh:
        assert fh.metadata()["ss_steps"] == "3" and fh.metadata()["ss_base_model_version"] == "sd_v1"


def test_failed_training_shows_the_cause(comfy) -> None:
    server, _ = comfy
    data = make_dataset(server.base / "input" / "ls_bad", n=2, size=64)
    (data / "img_01.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    workflow = _workflow(server, "", "ls_bad", steps=2, folder="ls_bad")
    workflow["4"]["inputs"]["dataset"] = ["2", 0]  # no captioning step
    for node in ("3",):
        workflow.pop(node)
    entry = server.wait(server.queue(workflow))
    assert entry["status"]["status_str"] == "error"
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert "exit code 3" in error["exception_message"] and "img_01.png" in error["exception_message"]
    assert set(server.get("/object_info")) >= OUR_NODES  # the server keeps serving
    shutil.rmtree(data)


def test_each_preset_reaches_the_config_unless_a_widget_changed(comfy) -> None:
    """ComfyUI sends every widget's value: with the widgets the node declares left untouched, the preset decides
    (character trains at rank 32), and a changed widget wins. Asserted on the config the job wrote."""
    import yaml

    from lorascripts.host.form import FIELDS, form_defaults
    from lorascripts.host.presets import PRESETS

    server, _ = comfy
    declared = server.get("/object_info")["LoraScriptsTrainLoRA"]["input"]["required"]
    untouched = {f.name: declared[f.name][1]["default"] for f in FIELDS if f.in_node}
    assert untouched == {f.name: f.node_default for f in FIELDS if f.in_node}  # the node reads the one table
    assert all(declared[f.name][1]["tooltip"] == f.tooltip for f in FIELDS if f.in_node)
    data = make_dataset(server.base / "input" / "ls_presets", n=2, size=64)
    (data / "img_01.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # the child stops at the scan: fast
    relative = "initial_lora: models/loras/ls_old.safetensors\n"  # taken from the ComfyUI folder, not the cwd
    cases = {"style": {}, "character": {}, "concept": {"rank": 24, "advanced_yaml": relative}}
    for preset, changed in cases.items():
        workflow = _workflow(server, "", f"ls_preset_{preset}", steps=0, folder="ls_presets")
        workflow.pop("3")
        node = workflow["4"]["inputs"]
        node.update({"dataset": ["2", 0], "preset": preset, "advanced_yaml": "", **untouched, **changed})
        entry = server.wait(server.queue(workflow))
        assert entry["status"]["status_str"] == "error"  # the broken image, after the config was written
        written = server.base / "output" / "lora-scripts" / "runs" / f"ls_preset_{preset}" / "config.yaml"
        config = yaml.safe_load(written.read_text(encoding="utf-8"))
        expected = {**PRESETS[preset], **({"lora_rank": 24} if changed else {})}
        assert {k: config[k] for k in expected} == expected, (preset, config)
        assert config["lora_rank"] == {"style": 16, "character": 32, "concept": 24}[preset]
        # the defaults a form shows for the preset are what a run with untouched fields trains with
        shown = form_defaults(preset)
        assert all(config[k] == (v or config[k]) for k, v in shown.items() if k != "lora_rank" or not changed)
        assert config["max_train_steps"] is None and config["resolution"] == []  # 0: epochs, the family's
        old = server.base / "models" / "loras" / "ls_old.safetensors"
        assert config["initial_lora"] == (str(old) if changed else None)
    shutil.rmtree(data)
    # ComfyUI 0.3.75 does not check a V3 list widget's value against its list; the node does, before running
    workflow["4"]["inputs"]["preset"] = "characterr"
    assert server.post_raw("/prompt", {"prompt": workflow, "client_id": server.client_id}) == 400


def standard_sd15_lora(path: Path, seed: int = 0) -> Path:
    """A rank-4 LoRA with random weights for the standard SD1.5 layout (every kohya default target)."""
    import json

    import torch

    from lorascripts.models.families import get_family
    from lorascripts.network.lora import NetworkSpec, collect_targets
    from lorascripts.network.save import save_lora_file

    base = get_family("sd1").reference_model()
    namer = base.family.kohya_name(base)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for t in collect_targets(base, NetworkSpec(rank=4, alpha=4)):
        shape = t.module.weight.shape  # Linear, or the 1x1 proj_in/proj_out convs of SD1.5
        conv = (1, 1) if len(shape) == 4 else ()
        name = namer(t.component, t.path)
        tensors[f"{name}.lora_down.weight"] = torch.randn(4, *shape[1:], generator=g) * 0.01
        tensors[f"{name}.lora_up.weight"] = torch.randn(shape[0], 4, *conv, generator=g) * 0.01
        tensors[f"{name}.alpha"] = torch.tensor(4.0)
    meta = {
        "ss_network_dim": "4",
        "ss_network_alpha": "4",
        "ss_base_model_version": "sd_v1",
        "ss_output_name": path.stem,
    }
    meta["ss_tag_frequency"] = json.dumps({"1_x": {"zkstyle": 3}})
    return save_lora_file(path, tensors, meta, torch.float16)


def test_toolbox_nodes_inspect_merge_resize_bake(comfy) -> None:
    """The toolbox nodes in a real graph; the self-test runs ComfyUI's own key mapping inside the server."""
    server, _ = comfy
    loras = server.base / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    standard_sd15_lora(loras / "tb_a.safetensors", 1)
    broken = standard_sd15_lora(loras / "tb_b.safetensors", 2)
    from safetensors.torch import load_file, save_file

    renamed = {k.replace("lora_te_text_model_", "lora_te_"): v for k, v in load_file(str(broken)).items()}
    save_file(renamed, str(loras / "tb_broken.safetensors"), metadata={"ss_output_name": "tb_broken"})
    workflow = {
        "1": {
            "class_type": "LoraScriptsInspectLoRA",
            "inputs": {"lora_name": "tb_a.safetensors", "against": "sd15-random.safetensors"},
        },
        "2": {
            "class_type": "LoraScriptsInspectLoRA",
            "inputs": {"lora_name": "tb_broken.safetensors", "against": "sd15-random.safetensors"},
        },
        "3": {
            "class_type": "LoraScriptsMergeLoRAs",
            "inputs": {
                "lora_1": "tb_a.safetensors",
                "weight_1": 0.5,
                "lora_2": "tb_b.safetensors",
                "weight_2": 0.5,
                "rank": 0,
                "output_name": "tb_merged",
            },
        },
        "4": {
            "class_type": "LoraScriptsResizeLoRA",
            "inputs": {
                "lora_name": "tb_a.safetensors",
                "mode": "rank",
                "rank": 2,
                "energy": 0.9,
                "output_name": "tb_r2",
            },
        },
        "5": {
            "class_type": "LoraScriptsMergeIntoCheckpoint",
            "inputs": {
                "ckpt_name": "sd15-random.safetensors",
                "lora_name": "tb_a.safetensors",
                "weight": 0.8,
                "output_name": "tb_baked",
            },
        },
    }
    entry = server.wait(server.queue(workflow), timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    good, bad = entry["outputs"]["1"]["text"][0], entry["outputs"]["2"]["text"][0]
    assert "ComfyUI: 264 modules patched, 0 keys not loaded" in good and "every key applies" in good, good
    assert (
        "192/264 LoRA modules applied" in bad and "ComfyUI: 192 modules patched, 216 keys not loaded" in bad
    ), bad
    assert (loras / "tb_merged.safetensors").is_file() and (loras / "tb_r2.safetensors").is_file()
    baked = server.base / "models" / "checkpoints" / "tb_baked.safetensors"
    assert baked.is_file() and "264 layers changed" in entry["outputs"]["5"]["text"][0]
    baked.unlink()  # 2 GB


def test_generate_text_node_speaks_in_the_trained_voice(comfy, tmp_path) -> None:
    """A tiny Llama and a text LoRA trained on 20 pairs, in models/LLM: the node returns the learned answer."""
    from test_llm import PAIRS, _config
    from tiny_llm import build_tiny_lm, build_tokenizer

    from lorascripts.llm.train import train_llm

    server, _ = comfy
    llm = server.base / "models" / "LLM"
    tokenizer = build_tokenizer(
        tmp_path / "tok", [f"{p} {r}" for p, r in PAIRS] * 3 + ["user assistant system"] * 5
    )
    base = build_tiny_lm("llama", llm / "tiny-llama", tokenizer)
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS), encoding="utf-8"
    )
    adapter = train_llm(_config(base, data, tmp_path / "out")).adapter_dir
    shutil.copytree(adapter, llm / "my-voice")
    workflow = {
        "1": {
            "class_type": "LoraScriptsGenerateText",
            "inputs": {
                "base_model": "tiny-llama",
                "adapter": "my-voice",
                "prompt": PAIRS[5][0],
                "max_new_tokens": 32,
                "temperature": 0.0,
                "seed": 0,
            },
        }
    }
    entry = server.wait(server.queue(workflow), timeout=300)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    assert entry["outputs"]["1"]["text"][0] == PAIRS[5][1]
    bad = {"1": {**workflow["1"], "inputs": {**workflow["1"]["inputs"], "base_model": "../../../etc"}}}
    refused = server.post_raw("/prompt", {"prompt": bad, "client_id": server.client_id})
    assert refused >= 400  # not in the list of models/LLM folders: the node's validate_inputs refuses it


def test_pack_in_a_comfyui_without_the_v3_api_says_what_to_update() -> None:
    """An older ComfyUI (no comfy_api.latest) imports the pack and gets one actionable line, not a traceback."""
    import subprocess
    import sys

    load = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(REPO / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(REPO)!r}])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['pack'] = module\n"
        "try:\n    spec.loader.exec_module(module)\nexcept ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=60, check=True)
    assert "need ComfyUI 0.3.75 or newer" in out.stdout and "Update ComfyUI" in out.stdout, out
