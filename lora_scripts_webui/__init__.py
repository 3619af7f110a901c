"""The AUTOMATIC1111 / Forge WebUI door: a "LoRA Training" tab around the lorascripts engine.

The WebUI runs `scripts/lora_scripts_tab.py` with this repository first on `sys.path`; that file imports this
package, which imports gradio and the WebUI's `modules` only here (the engine never does).
"""
