"""Run settings the config leaves unset, filled from the base model's family (`Family.config_defaults`).

Some settings have no value right for every family: FLUX.1 trains with kohya's shift 3.1582, Z-Image with its
scheduler's 3.0; SD and FLUX.1 train a text-encoder LoRA by default, Z-Image cannot (no loader reads a Qwen3 LoRA)
and caches its encoder's outputs instead. Such keys are empty (None) in the config; before anything reads them
(the estimate, the memory preset, the model) a run asks the family of its base model, found from the file's
header without loading it, and fills only the keys still empty; the rest take `GENERIC` (what every config
trained with before families had defaults). The filled values are the run's: the saved config, the LoRA's
metadata (`ls_family_defaults`) and the estimate's log say which came from the family.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from ..errors import ConfigError
from .loader import identify_base_model

logger = logging.getLogger(__name__)

# the value of each family-dependent key when neither the config nor the family sets it (SD's and FLUX.1's)
GENERIC: dict[str, Any] = {
    "timestep_sampling": "shift",
    "discrete_flow_shift": 3.1582,
    "train_text_encoder": True,
    "cache_text_encoder_outputs": "off",
}


@dataclasses.dataclass(frozen=True)
class FamilyDefaults:
    """What `with_family_defaults` filled in: the family's label and variant, and {key: value}."""

    family: str = ""
    variant: str = ""
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """One log line: `family defaults (Z-Image turbo): discrete_flow_shift=3.0, ...`."""
        model = " ".join(part for part in (self.family, self.variant) if part) or "generic"
        values = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"family defaults ({model}): {values or 'none needed (every key set in the config)'}"

    def metadata(self) -> dict[str, str]:
        """The LoRA metadata field (JSON of the filled keys)."""
        return {"ls_family_defaults": json.dumps(self.values, sort_keys=True)} if self.values else {}


def _unset(cfg: Any) -> list[str]:
    return [key for key in GENERIC if getattr(cfg, key, None) is None]


def with_family_defaults(cfg: Any) -> tuple[Any, FamilyDefaults]:
    """`cfg` (an image TrainConfig) with its unset family-dependent keys filled, and what was filled. An explicit
    `train_text_encoder: true` on a family whose LoRAs hold no text-encoder modules is a ConfigError."""
    unset = _unset(cfg)
    if not unset and cfg.train_text_encoder is not True:
        return cfg, FamilyDefaults()
    from ..toy import TOY_MODEL_DIR

    source = str(TOY_MODEL_DIR) if cfg.base_model == "toy" else cfg.base_model
    expected = None if cfg.model_family == "auto" else cfg.model_family
    family, name, metadata = identify_base_model(source, expected)
    variant = family.variant(name, metadata, cfg.model_variant) if family else ""
    if family is not None and cfg.train_text_encoder and not family.text_lora:
        raise ConfigError(
            f"`train_text_encoder: true`, but {cfg.base_model} is a {family.label} model, whose LoRA files hold no "
            f"text-encoder modules (no {family.label} loader reads them). Remove train_text_encoder (or set it "
            "to false); its text-encoder outputs are cached instead."
        )
    own = family.config_defaults(variant) if family else {}
    values = {key: own.get(key, GENERIC[key]) for key in unset}
    if "train_text_encoder" in values and cfg.cache_text_encoder_outputs not in (None, "off"):
        values["train_text_encoder"] = False  # caching asked for means a frozen encoder
    filled = FamilyDefaults(family.label if family else "", variant, values)
    return dataclasses.replace(cfg, **values), filled
