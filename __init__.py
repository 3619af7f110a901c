"""ComfyUI entry point: this repository is also a custom-node pack (see nodes/ and js/).

ComfyUI imports this file as a package; everything below uses relative imports. The training engine
(`lorascripts`) never imports ComfyUI; only `nodes/` does.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
