"""The checkpoint list and model unload/reload, as the WebUI's sd_models offers them."""

import os

from . import calls, paths


class CheckpointInfo:
    def __init__(self, filename, title):
        self.filename, self.title = filename, title


checkpoints_list = {}


def list_models():
    checkpoints_list.clear()
    folder = os.path.join(paths.models_path, "Stable-diffusion")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith((".safetensors", ".ckpt")):
            title = f"{name} [0000000000]"
            checkpoints_list[title] = CheckpointInfo(os.path.join(folder, name), title)
    calls.record("list_models")


def unload_model_weights():
    calls.record("unload_model_weights")


def reload_model_weights():
    calls.record("reload_model_weights")
