"""AUTOMATIC1111 / Forge entry point: registers the "LoRA Training" tab and its settings.

The WebUI executes this file by path with the extension folder first on sys.path, so the two packages beside it
(`lora_scripts_webui`, `lorascripts`) import here, at the top, and stay importable afterwards.
"""

from modules import script_callbacks

from lora_scripts_webui import tab

script_callbacks.on_ui_tabs(tab.on_ui_tabs)
script_callbacks.on_ui_settings(tab.on_ui_settings)
