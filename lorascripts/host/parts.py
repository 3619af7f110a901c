"""The part files a host form offers for diffusion transformers (FLUX.1's VAE, CLIP-L and T5 files; Z-Image's
VAE and Qwen3 files, ...): one choice per config key that some registered family takes (`Family.components`),
so a new family's parts appear in the ComfyUI node and the WebUI tab without host edits.

Each choice lists the files of the host's folder for that kind of part (`PartField.kind`: a VAE or a text
encoder) after `AUTOMATIC`, which leaves the file to the family's own search (beside the model, then the host's
model folders). The keys come in the schema's `COMPONENT_KEYS` order, which only ever grows at its end: saved
ComfyUI workflows address widgets by position.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from ..config.schema import COMPONENT_KEYS
from ..errors import ConfigError

AUTOMATIC = "(found automatically)"


@dataclass(frozen=True)
class PartField:
    """One part-file choice of a host form: the config key and what each family that takes it keeps there."""

    key: str  # the config key: vae, text_encoder, text_encoder_2
    uses: tuple[
        tuple[str, str], ...
    ]  # (family label, the file it means), e.g. ("FLUX.1", "VAE (ae.safetensors)")

    @property
    def kind(self) -> str:
        """Which host folder holds such files: "vae" or "text_encoder"."""
        return "vae" if self.key == "vae" else "text_encoder"

    @property
    def label(self) -> str:
        if self.kind == "vae":
            return "VAE file"
        number = self.key.removeprefix("text_encoder").strip("_")
        return f"Text encoder {number} file" if number else "Text encoder file"

    @property
    def tooltip(self) -> str:
        uses = "; ".join(f"{family}: {what}" for family, what in self.uses)
        return (
            f"Diffusion transformers: the {self.label.lower()} ({uses}). {AUTOMATIC}: the file beside the model or "
            "in the host's model folders. SD1/SD2/SDXL checkpoints hold their parts: leave it automatic."
        )


@cache
def part_fields() -> tuple[PartField, ...]:
    """The part-file choices of every registered family, in `COMPONENT_KEYS` order (loads the family modules)."""
    from ..models.families import all_families

    families = sorted(all_families(), key=lambda f: f.name)
    fields = []
    for key in COMPONENT_KEYS:
        uses = tuple((f.label, f.components[key]) for f in families if key in f.components)
        if uses:
            fields.append(PartField(key, uses))
    return tuple(fields)


def part_settings(parts: Mapping[str, str | None]) -> dict[str, str]:
    """The chosen part files as config keys; automatic ones (`AUTOMATIC`, '' or None) left out."""
    unknown = set(parts) - set(COMPONENT_KEYS)
    if unknown:
        raise ConfigError(f"unknown part files {sorted(unknown)}; known: {', '.join(COMPONENT_KEYS)}.")
    return {key: str(value) for key, value in parts.items() if value and value != AUTOMATIC}
