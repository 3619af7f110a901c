"""lora-scripts engine: host-independent LoRA training for Stable Diffusion (SD1.x, SD2.x, SDXL) and LLMs.

This package never imports ComfyUI, the WebUI or gradio; those hosts call it through its config object,
its command line and its event stream. Importing it is cheap: heavy libraries load on first use.
"""

__version__ = "0.1.0"
