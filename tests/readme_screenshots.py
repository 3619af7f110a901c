"""Refresh the README's pictures of the two host doors from a real quickstart-sized run on the toy model.

    .venv/bin/python tests/readme_screenshots.py [--steps 400] [--only webui|comfyui]

Each host trains the quickstart LoRA (datasets/quickstart, the quickstart config's settings) in headless
Chromium: the WebUI tab under the stand-in launcher (tests/webui_launch.py, gradio 4 as Forge pins it) and the
"train a style" graph in ComfyUI 0.3.75 (tests/comfy_host.py). The toy model's single-file checkpoint is put
in each host's checkpoint folder with its tokenizer beside it, so both hosts list it like any checkpoint. Writes
docs/images/webui_tab.png and docs/images/comfyui_train.png; nothing else in the repository changes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import urllib.request
from pathlib import Path

import yaml
from browser import Browser, gradio_click, gradio_set, gradio_text, webui_load_dataset

from lorascripts.toy import TOY_MODEL_DIR

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "docs" / "images"
QUICKSTART = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
# ComfyUI's "what's new" banner is not part of what we show
HIDE_ANNOUNCEMENTS = (
    "[...document.querySelectorAll('div')].filter(d => d.offsetHeight > 0 && d.offsetHeight < 60"
    " && d.innerText.startsWith('Introducing')).slice(0, 1).forEach(d => d.style.display = 'none')"
)
# the quickstart settings the forms do not show, as their Advanced YAML
ADVANCED_KEYS = ("bucket_reso_steps", "min_bucket_reso", "text_encoder_lr", "lr_scheduler", "lr_warmup_steps")


def advanced_yaml(extra: dict | None = None) -> str:
    values = {k: QUICKSTART[k] for k in ADVANCED_KEYS}
    values.update(mixed_precision="no", sample_steps=20, **(extra or {}))
    return yaml.safe_dump(values, sort_keys=False)


def toy_checkpoint(folder: Path) -> Path:
    """The toy model's single-file checkpoint (shipped with it) as `folder/toy.safetensors`, with its tokenizer
    beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TOY_MODEL_DIR / "toy-sd1.safetensors", folder / "toy.safetensors")
    shutil.copytree(TOY_MODEL_DIR / "tokenizer", folder / "tokenizer", dirs_exist_ok=True)
    return folder / "toy.safetensors"


def webui_screenshot(root: Path, steps: int) -> Path:
    from webui_host import WebUIServer

    toy_checkpoint(root / "models" / "Stable-diffusion")
    data = shutil.copytree(REPO / "datasets" / "quickstart", root / "zkstyle")
    server = WebUIServer(root, "4")
    browser = Browser()
    try:
        webui_load_dataset(browser, server.url, data)
        fields = {
            "lora_scripts_name": QUICKSTART["output_name"],
            "lora_scripts_rank": QUICKSTART["lora_rank"],
            "lora_scripts_alpha": QUICKSTART["lora_alpha"],
            "lora_scripts_lr": QUICKSTART["learning_rate"],
            "lora_scripts_steps": steps,
            "lora_scripts_resolution": QUICKSTART["resolution"],
            "lora_scripts_batch": QUICKSTART["batch_size"],
            "lora_scripts_trigger": QUICKSTART["trigger_word"],
            "lora_scripts_sample": QUICKSTART["sample_prompts"][0],
            "lora_scripts_advanced": advanced_yaml(),
        }
        for elem_id, value in fields.items():
            gradio_set(browser, elem_id, value)
        gradio_click(browser, "lora_scripts_train")
        browser.wait_for(f"{gradio_text('lora_scripts_status')}.includes('<lora:')", timeout=3600)
        browser.wait_for("document.querySelectorAll('#lora_scripts_samples img').length > 0")
        browser.call(
            "Emulation.setDeviceMetricsOverride", width=1500, height=1900, deviceScaleFactor=1, mobile=False
        )
        browser.evaluate("window.scrollTo(0, 0)")
        return browser.screenshot(IMAGES / "webui_tab.png")
    finally:
        browser.close()
        server.stop()


def comfyui_screenshot(base: Path, steps: int) -> Path:
    from comfy_host import ComfyServer
    from example_prompts import train_style_and_use
    from workflow_format import to_ui

    checkpoint = toy_checkpoint(base / "models" / "checkpoints")
    shutil.copytree(REPO / "datasets" / "quickstart", base / "input" / "zkstyle")
    server = ComfyServer(base)
    browser = Browser()
    try:
        graph = _quickstart_graph(train_style_and_use(), steps, checkpoint.parent / "tokenizer")
        workflow = to_ui(graph, server.get("/object_info"))
        # no first-run template dialog and no minimap over the graph
        for setting, value in (("Comfy.TutorialCompleted", b"true"), ("Comfy.Minimap.Visible", b"false")):
            request = urllib.request.Request(
                f"{server.url}/settings/{setting}", value, {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(request, timeout=30).close()
        browser.call(
            "Emulation.setDeviceMetricsOverride", width=1500, height=1150, deviceScaleFactor=1, mobile=False
        )
        browser.call("Page.navigate", url=server.url)
        browser.wait_for("!!(window.app && window.app.graph && window.app.graph._nodes)", timeout=180)
        browser.evaluate(f"window.app.loadGraphData({json.dumps(workflow)})")
        browser.evaluate("window.app.queuePrompt(0)")
        server.wait_idle(timeout=3600)
        browser.evaluate("document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click())")
        browser.evaluate(HIDE_ANNOUNCEMENTS)
        # the whole training node (loss chart and sample below it) in view
        browser.evaluate(
            "window.app.canvas.ds.changeScale(1.0, [240, 150]); window.app.canvas.setDirty(true, true)"
        )
        return browser.screenshot(IMAGES / "comfyui_train.png")
    finally:
        browser.close()
        server.stop()


def _quickstart_graph(graph: dict, steps: int, tokenizer: Path) -> dict:
    """The example graph's dataset and training nodes with the quickstart's data, model and settings. (The
    rest of the example renders with ComfyUI's own SD1 loaders, which expect full-size CLIP-L, not the toy.)"""
    dataset, train = graph["2"], graph["4"]
    dataset["inputs"]["folder"] = "zkstyle"
    train["inputs"].update(
        ckpt_name="toy.safetensors",
        dataset=["2", 0],
        lora_name=QUICKSTART["output_name"],
        rank=QUICKSTART["lora_rank"],
        alpha=float(QUICKSTART["lora_alpha"]),
        learning_rate=QUICKSTART["learning_rate"],
        steps=steps,
        resolution=QUICKSTART["resolution"],
        batch_size=QUICKSTART["batch_size"],
        trigger_word=QUICKSTART["trigger_word"],
        sample_prompt=QUICKSTART["sample_prompts"][0],
        # the toy's own tokenizer, not ComfyUI's CLIP-L copy (inside ComfyUI's folders, as requests must be)
        advanced_yaml=advanced_yaml({"tokenizer_path": str(tokenizer)}),
    )
    return {"2": dataset, "4": train}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=QUICKSTART["max_train_steps"])
    parser.add_argument("--only", choices=["webui", "comfyui"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lora-scripts-shots-"))
    try:
        if args.only in (None, "webui"):
            print(f"wrote {webui_screenshot(work / 'webui', args.steps)}")  # noqa: T201 - a command line
        if args.only in (None, "comfyui"):
            print(f"wrote {comfyui_screenshot(work / 'comfyui', args.steps)}")  # noqa: T201
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
