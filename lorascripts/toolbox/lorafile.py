"""A LoRA file as modules: grouping kohya keys, the weight update each module stands for, and back (SVD).

The maths follows LORA_FORMAT.md §2.2: ΔW = up @ down * alpha / rank for LoRA/LoCon (conv `down` is r×in×k×k,
`up` is out×r×1×1); LoHa ΔW = (w1a@w1b) ⊙ (w2a@w2b) * alpha / rank; LoKr ΔW = w1 ⊗ w2 (factors optional) * scale.
No library exposes these conversions for kohya-format files (kohya's own scripts are not a library), so they are
written here, small and tested against the runtime loader.
"""

from __future__ import annotations

import json
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

    def factors(self, weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(up, down) in float32 with weight·alpha/rank folded into up, both flat (out×r, r×in·k·k), so that
        up @ down is ΔW; None for LoHa/LoKr, whose update is not a plain product."""
        if self.kind != "lora":
            return None
        scale = weight * self.alpha / max(1, self.rank)
        up = self.parts["lora_up.weight"].float().flatten(1) * scale
        return up, self.parts["lora_down.weight"].float().flatten(1)

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
    u, s, vh = torch.linalg.svd(delta.float().flatten(1), full_matrices=False)
    return _truncate(u, s, vh, delta.shape, rank, energy)


def low_rank_of_modules(
    parts: list[tuple[float, LoraModule]], rank: int | None = None, energy: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """`low_rank` of Σ weightᵢ·ΔWᵢ: from the factors when every module is a plain LoRA, else from ΔW."""
    factors = [module.factors(weight) for weight, module in parts]
    if all(f is not None for f in factors):
        shape = parts[0][1].layer_shape
        return low_rank_of_product([f[0] for f in factors], [f[1] for f in factors], shape, rank, energy)
    delta = sum(weight * module.delta() for weight, module in parts)
    return low_rank(delta, rank=rank, energy=energy)


def low_rank_of_product(
    ups: list[torch.Tensor],
    downs: list[torch.Tensor],
    shape: tuple[int, ...],
    rank: int | None = None,
    energy: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """`low_rank` of ΔW = Σ upᵢ @ downᵢ (flat factors, scales folded into up) without forming ΔW: with
    U = [up₁ … upₙ] = Q_u R_u and Dᵀ = [down₁; …; downₙ]ᵀ = Q_d R_d, ΔW = Q_u (R_u R_dᵀ) Q_dᵀ, so the SVD of the
    small R×R core gives ΔW's exact SVD. A full SVD of every 1280×5120 update made a 264-module SD resize take
    minutes on a CPU; this takes a second. (Written here: torch has only the randomized `svd_lowrank`.)"""
    q_up, r_up = torch.linalg.qr(torch.cat(ups, 1))
    q_down, r_down = torch.linalg.qr(torch.cat(downs, 0).T)
    a, s, bh = torch.linalg.svd(r_up @ r_down.T, full_matrices=False)
    return _truncate(q_up @ a, s, bh @ q_down.T, torch.Size(shape), rank, energy)


def _truncate(
    u: torch.Tensor,
    s: torch.Tensor,
    vh: torch.Tensor,
    shape: torch.Size,
    rank: int | None,
    energy: float | None,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
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
    from ..models.families import get_family

    fields = get_family(family).lora_metadata(v_prediction=False, resolution=0)
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": fields["ss_base_model_version"],
        "ss_v2": fields["ss_v2"],
        "ss_output_name": name,
        **extra,
    }
