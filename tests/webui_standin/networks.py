"""Stand-in for the built-in Lora extension's `networks` module: the list `<lora:name:w>` is resolved from."""

import os

from modules import calls, paths, shared

available_networks = {}


def list_available_networks():
    available_networks.clear()
    folder = shared.cmd_opts.lora_dir or os.path.join(paths.models_path, "Lora")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".safetensors"):
            available_networks[name[: -len(".safetensors")]] = os.path.join(folder, name)
    calls.record("list_available_networks:" + ",".join(sorted(available_networks)))
