"""kohya key names for the layers we train (LORA_FORMAT.md §2, §3, §9.4).

- U-Net: SD1/SD2 use diffusers block names (`lora_unet_down_blocks_...`); SDXL uses the original SGM names
  (`lora_unet_input_blocks_...`), which is what kohya writes and every loader maps correctly.
- Text encoders: always `..._text_model_encoder_layers_N_...`, whatever the transformers version calls the
  module path (transformers 5 dropped the `text_model` wrapper; names without it are dropped by every loader).
"""

from __future__ import annotations

from typing import Any

TEXT_PREFIXES = {"te": "lora_te", "te1": "lora_te1", "te2": "lora_te2"}


class KohyaNamer:
    """Maps (component, module path) to the kohya base name for one SD model (`ldm_unet_names`: SDXL's)."""

    def __init__(self, unet_config: Any, *, ldm_unet_names: bool) -> None:
        self._ldm = None
        if ldm_unet_names:
            from .ldm_names import UnetLdmNames

            self._ldm = UnetLdmNames(unet_config)

    def name(self, component: str, path: str) -> str:
        """The kohya base name (no dots) of a layer."""
        if component == "unet":
            if self._ldm is not None:
                path = self._ldm.to_ldm(path)
            return "lora_unet_" + path.replace(".", "_")
        prefix = TEXT_PREFIXES[component]
        if path.startswith("text_model."):
            path = path[len("text_model.") :]
        return f"{prefix}_text_model_{path.replace('.', '_')}"
