"""Will a server accept this adapter? `adapter_config.json` against the rules of vLLM and TGI, and the exact
flags to start them with.

The rules are read from the servers' own loading code (no server is imported here; neither runs on a CPU box):
- vLLM `vllm/lora/peft_helper.py` (`PEFTHelper._validate_features`, `validate_legal`): no DoRA, no
  `modules_to_save`, `bias: none`, rank (largest of `r` and `rank_pattern`) <= `--max-lora-rank`, rsLoRA scale
  alpha/sqrt(r); unknown keys such as `alpha_pattern` are dropped by `from_dict`, so their scales are lost.
  `vllm/config/lora.py`: `MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]`, default 16.
  `models/llama.py`, `qwen2.py`: `packed_modules_mapping` (q/k/v -> qkv_proj, gate/up -> gate_up_proj), o_proj,
  down_proj, and `embedding_modules` embed_tokens and lm_head.
- TGI `server/text_generation_server/adapters/lora.py` (`LoraConfig.load`): reads only r, target_modules,
  fan_in_fan_out, lora_alpha and use_rslora, so DoRA magnitudes, biases, `modules_to_save` and per-module
  rank/alpha patterns are silently ignored (the served model would differ from the trained one); the Llama-family
  adapter layers are q/k/v/o, gate/up/down and lm_head. Local adapters: `--lora-adapters name=path`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
# server -> module names with a LoRA layer (Llama, Qwen2, Mistral naming)
SUPPORTED_MODULES = {
    "vllm": _PROJECTIONS | {"qkv_proj", "gate_up_proj", "embed_tokens", "lm_head"},
    "tgi": _PROJECTIONS | {"lm_head"},
}


@dataclass(frozen=True)
class Rule:
    """One thing a server refuses or silently drops; `applies` reads the adapter config."""

    key: str
    servers: tuple[str, ...]
    problem: str
    fix: str

    def applies(self, config: dict[str, Any]) -> bool:
        value = config.get(self.key)
        if self.key == "bias":
            return (value or "none") != "none"
        return bool(value)


# One table, with where each rule comes from (see the module docstring).
RULES = (
    Rule(
        "use_dora",
        ("vllm", "tgi"),
        "DoRA adapters: vLLM refuses them ('vLLM does not yet support DoRA'), TGI drops the magnitude vectors",
        "retrain with use_dora: false, or serve the merged model (merge_full_model: true)",
    ),
    Rule(
        "modules_to_save",
        ("vllm", "tgi"),
        "modules_to_save: vLLM refuses it, TGI ignores the saved modules",
        "train without modules_to_save (adapters from this trainer never set it)",
    ),
    Rule(
        "bias",
        ("vllm", "tgi"),
        "trained biases (bias != none): vLLM refuses them ('Adapter bias is not supported'), TGI ignores them",
        "retrain with bias: none, or serve the merged model",
    ),
    Rule(
        "alpha_pattern",
        ("vllm", "tgi"),
        "per-module alpha_pattern: both servers use the single lora_alpha, so those modules get the wrong scale",
        "retrain with one lora_alpha for every module, or serve the merged model",
    ),
    Rule(
        "rank_pattern",
        ("tgi",),
        "per-module rank_pattern: TGI builds every layer with the single r",
        "retrain with one rank for every module",
    ),
    Rule(
        "fan_in_fan_out",
        ("vllm",),
        "fan_in_fan_out (Conv1D/GPT-2 style weights): vLLM expects nn.Linear-shaped LoRA weights",
        "use a model with nn.Linear projections",
    ),
)


@dataclass
class ServingReport:
    """What each server will do with the adapter, and how to start it."""

    adapter: Path
    rank: int
    scale: float
    errors: dict[str, list[str]] = field(default_factory=lambda: {"vllm": [], "tgi": []})
    notes: list[str] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": str(self.adapter),
            "rank": self.rank,
            "scale": self.scale,
            "ok": self.ok,
            "errors": self.errors,
            "notes": self.notes,
            "commands": self.commands,
        }

    def format(self) -> str:
        lines = [f"serving check of {self.adapter} (rank {self.rank}, scale {self.scale:g})"]
        for server, label in (("vllm", "vLLM"), ("tgi", "TGI")):
            problems = self.errors[server]
            if problems:
                lines.append(f"  {label}: will not serve it as trained:")
                lines += [f"    - {p}" for p in problems]
            else:
                lines.append(f"  {label}: ok -> {self.commands[server]}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def read_adapter_config(adapter: Path) -> dict[str, Any]:
    """adapter_config.json of a peft adapter folder, with a clear error when it is missing or damaged."""
    path = Path(adapter) / "adapter_config.json"
    if not path.is_file():
        raise ModelError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json).")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); re-save the adapter.") from None
    if not isinstance(config, dict) or not isinstance(config.get("r"), int) or config["r"] < 1:
        raise ModelError(f"{path}: `r` must be a positive integer rank; is this a LoRA adapter?")
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{path}: peft_type {config.get('peft_type')!r}; servers load LoRA adapters only.")
    return config


def max_rank(config: dict[str, Any]) -> int:
    """The largest rank in the adapter (r, or a larger per-module rank_pattern value)."""
    return max([int(config["r"]), *(int(v) for v in (config.get("rank_pattern") or {}).values())])


def lora_scale(config: dict[str, Any]) -> float:
    """The factor servers multiply B @ A by: alpha/r, or alpha/sqrt(r) with rsLoRA."""
    alpha, rank = float(config.get("lora_alpha", 8)), int(config["r"])
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def vllm_rank_flag(rank: int) -> int | None:
    """The --max-lora-rank to pass: the smallest allowed value >= rank (None when rank is over 512)."""
    return next((r for r in VLLM_RANKS if r >= rank), None)


def _targets(config: dict[str, Any]) -> list[str]:
    targets = config.get("target_modules") or []
    if isinstance(targets, str):  # a regex or "all-linear" left unresolved: nothing to check by name
        return []
    return sorted({t.rsplit(".", 1)[-1] for t in targets})


def check_adapter(adapter: Path | str, name: str | None = None, base: str | None = None) -> ServingReport:
    """The serving report of an adapter folder: errors per server and the start commands."""
    adapter = Path(adapter)
    config = read_adapter_config(adapter)
    rank = max_rank(config)
    report = ServingReport(adapter, rank, lora_scale(config))
    for rule in RULES:
        if rule.applies(config):
            for server in rule.servers:
                report.errors[server].append(f"{rule.problem}; fix: {rule.fix}")
    for server, supported in SUPPORTED_MODULES.items():
        unknown = [t for t in _targets(config) if t not in supported]
        if unknown:
            report.errors[server].append(
                f"target modules {unknown} have no LoRA layer in {server}; fix: target only "
                f"{sorted(supported)} (or serve the merged model)"
            )
    flag = vllm_rank_flag(rank)
    if flag is None:
        report.errors["vllm"].append(
            f"rank {rank} is over vLLM's largest --max-lora-rank 512; fix: retrain smaller"
        )
    if config.get("use_rslora"):
        report.notes.append(f"rsLoRA: both servers apply alpha/sqrt(r) = {report.scale:g}, as training did")
    if isinstance(config.get("target_modules"), str):
        report.notes.append(
            f"target_modules is the pattern {config['target_modules']!r}; not checked by name"
        )
    name = name or adapter.name
    base = base or config.get("base_model_name_or_path") or "BASE_MODEL"
    rank_flag = f" --max-lora-rank {flag}" if flag else ""  # explicit even at vLLM's default (16)
    report.commands["vllm"] = f"vllm serve {base} --enable-lora{rank_flag} --lora-modules {name}={adapter}"
    report.commands["tgi"] = f"text-generation-launcher --model-id {base} --lora-adapters {name}={adapter}"
    return report
