"""ComfyUI entry point: this repository is also a custom-node pack (see nodes/ and js/).

ComfyUI imports this file as a package; everything below uses relative imports. The training engine
(`lorascripts`) never imports ComfyUI; only `nodes/` does. The nodes use ComfyUI's V3 node API
(`comfy_api.latest`), loaded through `comfy_entrypoint`; a ComfyUI without it gets one clear error line.
"""

WEB_DIRECTORY = "./js"
MINIMUM_COMFYUI = "0.3.75"

try:
    from comfy_api.latest import ComfyExtension, io  # noqa: F401 - the V3 node API our nodes are written for
except ImportError as exc:  # an older ComfyUI: say what to do instead of a traceback deep in nodes/
    raise ImportError(
        f"lora-scripts nodes need ComfyUI {MINIMUM_COMFYUI} or newer (its V3 node API, comfy_api.latest, is "
        f"missing here: {exc}). Update ComfyUI (git pull, or the Manager's 'Update ComfyUI')."
    ) from None

from .nodes import LoraScriptsExtension  # noqa: E402


async def comfy_entrypoint() -> LoraScriptsExtension:
    """ComfyUI's V3 loader calls this and registers the extension's nodes."""
    return LoraScriptsExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
