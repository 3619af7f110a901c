"""A LoRA file as modules: grouping kohya keys, the weight update each module stands for, and back (SVD).

The maths follows LORA_FORMAT.md §2.2: ΔW = up @ down * alpha / rank for LoRA/LoCon (conv `down` is r×in×k×k,
`up` is out×r×1×1); LoHa ΔW = (w1a@w1b) ⊙ (w2a@w2b) * alpha / rank; LoKr ΔW = w1 ⊗ w2 (factors optional) * scale.
No library exposes these conversions for kohya-format files (kohya's own scripts are not a library), so they are
written here, small and tested against the runtime loader.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import torch

from ..errors import ModelError


@dataclass
class LoraModule:
    """One adapted layer: its kohya base name and its tensors by part (`lora_down.weight`, `alpha`, ...)."""

    name: str
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if "lora_down.weight" in self.parts:
            return "lora"
        if "hada_w1_a" in self.parts:
            return "loha"
        if any(p.startswith("lokr_") for p in self.parts):
            return "lokr"
        return "unknown"

    @property
    def rank(self) -> int:
        if self.kind == "lora":
            return int(self.parts["lora_down.weight"].shape[0])
        if self.kind == "loha":
            return int(self.parts["hada_w1_b"].shape[0])
        if "lokr_w2_a" in self.parts:
            return int(self.parts["lokr_w2_a"].shape[1])
        return 0

    @property
    def alpha(self) -> float:
        value = self.parts.get("alpha")
        return float(value) if value is not None else float(self.rank or 1)

    @property
    def is_conv(self) -> bool:
        down = self.parts.get("lora_down.weight")
        return down is not None and down.dim() == 4

    @property
    def is_conv3x3(self) -> bool:
        """A convolution with a kernel wider than 1×1: what makes a LoRA a LoCon (kohya's `conv_dim`). Plain
        `networks.lora` also adapts the 1×1 `proj_in`/`proj_out` convolutions of SD1/SD2."""
        down = self.parts.get("lora_down.weight")
        return down is not None and down.dim() == 4 and tuple(down.shape[2:]) != (1, 1)

    @property
    def layer_shape(self) -> tuple[int, ...]:
        """Shape of the weight this module changes (conv: out×in×k×k)."""
        if self.kind == "lora":
            down = self.parts["lora_down.weight"]
            return (int(self.parts["lora_up.weight"].shape[0]), *(int(d) for d in down.shape[1:]))
        return tuple(self.delta().shape)

    def delta(self) -> torch.Tensor:
        """ΔW in float32, shaped like the layer's weight (conv: out×in×k×k)."""
        p = {k: v.float() for k, v in self.parts.items()}
        scale = self.alpha / max(1, self.rank)
        if self.kind == "lora":
            down, up = p["lora_down.weight"], p["lora_up.weight"]
            if down.dim() == 4:
                flat = up.flatten(1) @ down.flatten(1)
                return (flat * scale).reshape(up.shape[0], *down.shape[1:])
            return up @ down * scale
        if self.kind == "loha":
            w = (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
            return w * scale
        if self.kind == "lokr":
            w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
            w2 = p["lokr_w2"] if "lokr_w2" in p else p["lokr_w2_a"] @ p["lokr_w2_b"].flatten(1)
            has_factor = "lokr_w2_a" in p or "lokr_w1_a" in p
            return torch.kron(w1, w2.flatten(1)) * (scale if has_factor else 1.0)
        raise ModelError(
            f"{self.name} is not a LoRA/LoHa/LoKr module (parts {sorted(self.parts)}); remove it from the file."
        )


def group_modules(tensors: dict[str, torch.Tensor]) -> dict[str, LoraModule]:
    """kohya keys (`<base>.<part>`, base without dots) -> modules."""
    modules: dict[str, LoraModule] = {}
    for key, tensor in tensors.items():
        base, _, part = key.partition(".")
        modules.setdefault(base, LoraModule(base)).parts[part] = tensor
    return modules


def module_tensors(name: str, down: torch.Tensor, up: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    return {
        f"{name}.lora_down.weight": down.contiguous(),
        f"{name}.lora_up.weight": up.contiguous(),
        f"{name}.alpha": torch.tensor(float(alpha)),
    }


def low_rank(
    delta: torch.Tensor, rank: int | None = None, energy: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(down, up, rank, kept energy) with up @ down ≈ ΔW and alpha = rank (scale 1).

    `rank`: a fixed rank (capped at the matrix's); `energy`: the smallest rank whose singular values keep at
    least this fraction of the squared Frobenius norm (dynamic resize). Conv deltas come back as conv factors.
    """
    shape = delta.shape
    matrix = delta.float().flatten(1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    total = float((s**2).sum()) or 1.0
    cumulative = torch.cumsum(s**2, 0) / total
    if energy is not None:
        chosen = int(torch.searchsorted(cumulative, torch.tensor(min(energy, 1.0) - 1e-7)).item()) + 1
    else:
        chosen = rank or len(s)
    chosen = max(1, min(chosen, len(s)))
    root = s[:chosen].sqrt()
    up = u[:, :chosen] * root
    down = root[:, None] * vh[:chosen]
    kept = float(cumulative[chosen - 1])
    if len(shape) == 4:
        return down.reshape(chosen, *shape[1:]), up.reshape(shape[0], chosen, 1, 1), chosen, kept
    return down, up, chosen, kept


SD_FAMILIES = ("sd1", "sd2", "sdxl")
# kohya's FLUX.1 names (networks/lora_flux.py): 19 double- and 38 single-stream blocks; HunyuanImage 2.1 uses the
# same block names with 20 and 40, so higher indices prove only "a double/single-stream transformer"
_FLUX_DOUBLE, _FLUX_SINGLE = (
    re.compile(r"lora_unet_double_blocks_(\d+)_"),
    re.compile(r"lora_unet_single_blocks_(\d+)_"),
)
_SDXL_UNET = ("lora_unet_input_blocks_", "lora_unet_output_blocks_", "lora_unet_middle_block_")
_SD_UNET = ("lora_unet_down_blocks_", "lora_unet_up_blocks_", "lora_unet_mid_block_")


def _family_from_metadata(metadata: dict[str, str]) -> str | None:
    """The family the file's own metadata names: kohya's ss_base_model_version, else modelspec.architecture."""
    version = metadata.get("ss_base_model_version", "").strip()
    arch = metadata.get("modelspec.architecture", "").split("/")[0].strip()
    if version.startswith("sdxl") or arch.startswith("stable-diffusion-xl"):
        return "sdxl"
    if (
        version.startswith("sd_v2")
        or metadata.get("ss_v2") == "True"
        or arch.startswith("stable-diffusion-v2")
    ):
        return "sd2"
    if version.startswith("sd_v1") or arch.startswith("stable-diffusion-v1"):
        return "sd1"
    if version:  # kohya's other trainers write flux1, chroma, lumina2, hunyuan-image-2.1, ...
        return version
    if arch.startswith("flux-1"):
        return "flux1"
    if arch.startswith("stable-diffusion-3"):
        return "sd3"
    return arch or None


def _family_from_keys(keys: list[str]) -> str | None:
    """What the key grammar proves: flux1, sd3, sdxl (U-Net names), "te12" (only SDXL/SD3/FLUX text-encoder
    names), "sd" (SD1/SD2 names), "dit" (double/single blocks beyond FLUX.1's) or None."""
    doubles = [int(m[1]) for k in keys if (m := _FLUX_DOUBLE.match(k))]
    singles = [int(m[1]) for k in keys if (m := _FLUX_SINGLE.match(k))]
    if doubles or singles:
        return "flux1" if max(doubles, default=0) < 19 and max(singles, default=0) < 38 else "dit"
    if any(k.startswith("lora_unet_joint_blocks_") for k in keys):
        return "sd3"
    if any(k.startswith(_SDXL_UNET) for k in keys):
        return "sdxl"
    two_encoders = any(k.startswith(("lora_te1_", "lora_te2_")) for k in keys)
    if any(k.startswith(_SD_UNET + ("lora_te_",)) for k in keys):
        return "sdxl" if two_encoders else "sd"  # SDXL with diffusers U-Net names (some trainers write them)
    return "te12" if two_encoders else None


def detect_family(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sd1, sd2 or sdxl; another family by name (flux1, sd3, or what the metadata calls it); or "unknown".

    The key grammar decides what kind of model the file patches; the metadata and the cross-attention width
    then tell SD1 from SD2. A file whose keys and metadata prove nothing is "unknown", never guessed as SD1.
    """
    keyed, named = _family_from_keys(list(tensors)), _family_from_metadata(metadata)
    other = named if named and named not in SD_FAMILIES else None  # a non-SD family the file names
    if keyed == "sd":
        if named in SD_FAMILIES:
            return named
        for key, tensor in tensors.items():
            if "attn2_to_k.lora_down" in key:
                return {1024: "sd2", 2048: "sdxl"}.get(int(tensor.shape[1]), "sd1")
        return "sd1"  # SD1 key grammar (SD2 files carry ss_v2 or a 1024-wide cross-attention)
    if keyed == "te12":
        return other or "sdxl"
    if keyed in (None, "dit"):
        return named or "unknown"
    return other if other and keyed != "sdxl" else keyed  # e.g. kohya's "chroma" on FLUX.1 block names


def family_label(family: str) -> str:
    """How a family is written in messages: SD1, SDXL, FLUX.1, ..."""
    return {"flux1": "FLUX.1", "sd3": "SD3"}.get(family, family.upper() if family in SD_FAMILIES else family)


def json_field(metadata: dict[str, str], key: str) -> object | None:
    """A JSON-valued metadata entry, or None when absent or not valid JSON (or JSON null)."""
    return json.loads(metadata[key]) if is_json(metadata, key) else None


def is_json(metadata: dict[str, str], key: str) -> bool:
    """True when `key` is present and its value is valid JSON (kohya writes `null` for a missing structure)."""
    try:
        json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError, TypeError):
        return False
    return True


def tag_frequency(metadata: dict[str, str]) -> dict[str, dict[str, int]]:
    """ss_tag_frequency as {folder: {tag: count}}; anything malformed in a hand-edited file is left out."""
    value = json_field(metadata, "ss_tag_frequency")
    if not isinstance(value, dict):
        return {}
    return {
        str(folder): {str(t): n for t, n in counts.items() if isinstance(n, int)}
        for folder, counts in value.items()
        if isinstance(counts, dict)
    }


def lora_metadata(family: str, rank: int, alpha: float, name: str, **extra: str) -> dict[str, str]:
    """The kohya metadata every loader needs (LORA_FORMAT.md §11.5) for a file a tool wrote."""
    from ..models.family import ModelFamily

    fam = ModelFamily(family)
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": fam.base_model_version(False),
        "ss_v2": str(fam.v2),
        "ss_output_name": name,
        **extra,
    }
