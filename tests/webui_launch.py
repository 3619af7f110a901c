"""Start the extension the way AUTOMATIC1111/Forge does, around the stand-in hooks, with real gradio.

Usage (in a venv with gradio 3.41 or 4.x):
    WEBUI_STANDIN_ROOT=DIR python webui_launch.py --extension REPO --port P [--lora-dir D]

What the WebUI does and we repeat: the extension's preload flags are parsed into cmd_opts, every top-level
`scripts/*.py` is executed by file path with the extension folder first on sys.path only while it runs, the
settings callbacks run, then each registered tab is rendered inside the WebUI's `gr.Tabs` and the app is
launched with the queue on.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

STANDIN = Path(__file__).resolve().parent / "webui_standin"


def load_extension_scripts(extension: Path) -> None:
    for script in sorted((extension / "scripts").glob("*.py")):
        sys.path.insert(0, str(extension))
        try:
            spec = importlib.util.spec_from_file_location(script.name, script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(extension))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extension", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lora-dir", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(STANDIN))
    import gradio as gr
    import networks  # noqa: F401 - the built-in Lora extension is loaded before user extensions
    from modules import script_callbacks, sd_models, shared

    shared.cmd_opts.lora_dir = args.lora_dir
    sd_models.list_models()
    shared.opts.sd_model_checkpoint = next(iter(sd_models.checkpoints_list), None)
    load_extension_scripts(Path(args.extension))
    for callback in script_callbacks.settings_callbacks:
        callback()
    tabs = [tab for callback in script_callbacks.tab_callbacks for tab in callback()]
    with gr.Blocks(analytics_enabled=False, title="Stable Diffusion (stand-in)") as demo:
        with gr.Tabs(elem_id="tabs"):
            for blocks, title, elem_id in tabs:
                with gr.TabItem(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    blocks.render()
    if gr.__version__.startswith("3."):
        demo.queue(64)  # what AUTOMATIC1111 1.x calls
    else:
        demo.queue(default_concurrency_limit=64)
    print(f"gradio {gr.__version__}; settings: {sorted(shared.opts.data_labels)}", flush=True)
    demo.launch(server_name="127.0.0.1", server_port=args.port, prevent_thread_lock=False, show_error=True)


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
