"""diffusers/PEFT-format LoRAs (SD: `unet.….lora_A.weight`; FLUX.1: `transformer.…`, named by the family's
`diffusers_lora_names` / `kohya_from_diffusers`) to kohya format and back, alpha preserved.

PEFT state dicts do not store `lora_alpha` (LORA_FORMAT.md §9.9): it comes from the file's
`lora_adapter_metadata`, an `adapter_config.json` beside it, or `--alpha`; kohya files get it as `.alpha`
tensors. Going to diffusers format the scale alpha/rank is folded into `lora_B`, so no alpha is needed there.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import ModelError
from ..fileio import atomic_write_bytes
from ..models.families import family_names, get_family
from ..models.families.lora_detect import detect_family, family_label, peft_family
from ..network.save import read_lora_file, read_lora_weights, save_lora_file
from .lorafile import LoraModule, group_modules, lora_metadata, module_tensors
from .reference import kohya_targets, meta_base

logger = logging.getLogger(__name__)
COMPONENTS = {"unet": "unet", "text_encoder": "te", "text_encoder_2": "te2"}
# metadata of the diffusers-key files we write (training's output_format, convert --to diffusers): the scale
# alpha/rank is folded into lora_B, so alpha = rank reads them back exactly
FOLDED_KEY = "ls_output_format"


def _kohya_names(family: str) -> dict[tuple[str, str], str]:
    """(component, module path) -> kohya name for every layer a LoRA/LoCon can target in this family."""
    return {
        (t.component, _text_path(t.path, t.component)): name for name, t in kohya_targets(meta_base(family))
    }


def _text_path(path: str, component: str) -> str:
    """diffusers keeps the `text_model.` wrapper in text-encoder paths whatever the transformers version."""
    return path if component == "unet" or path.startswith("text_model.") else "text_model." + path


def _alphas(path: Path, metadata: dict[str, str], alpha: float | None) -> dict[str, float]:
    """lora_alpha per component (`unet`, `text_encoder`, ...), from the sources PEFT files keep it in."""
    if alpha is not None:
        return {c: alpha for c in COMPONENTS}
    found: dict[str, float] = {}
    try:
        adapter = json.loads(metadata.get("lora_adapter_metadata", "{}"))
        for key, value in adapter.items():  # diffusers >= 0.33: {"unet.lora_alpha": 8, ...}
            if key.endswith("lora_alpha"):
                found[key.split(".")[0] if "." in key else "unet"] = float(value)
    except (json.JSONDecodeError, AttributeError):
        pass
    config = path.with_name("adapter_config.json")
    if not found and config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("lora_alpha")
            found = {c: float(value) for c in COMPONENTS} if value is not None else {}
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError):
            raise ModelError(f"{config} has no readable lora_alpha; fix the file or pass --alpha.") from None
    return found


def peft_to_kohya(
    source: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], alpha: float | None = None
) -> tuple[str, dict[str, torch.Tensor], list[str], float | None]:
    """(family, kohya tensors, keys left out, the alpha the kohya tensors imply or None = per module) of a
    diffusers/PEFT LoRA's tensors, in memory (`source` names the file in messages and finds its
    adapter_config.json)."""
    downs = {k[: -len(".lora_A.weight")]: v for k, v in tensors.items() if k.endswith(".lora_A.weight")}
    if not downs:
        raise ModelError(f"{source.name} has no `.lora_A.weight` keys: it is not a diffusers/PEFT LoRA.")
    family = peft_family(downs)
    alphas = _alphas(source, metadata, alpha)
    if not alphas and metadata.get(FOLDED_KEY) != "diffusers":  # ours: the scale is in lora_B, alpha = rank
        logger.warning(
            "%s stores no lora_alpha; assuming alpha = rank (scale 1). Pass --alpha if it was trained otherwise.",
            source.name,
        )
    pairs = {key: (down, _up(source, tensors, key, down)) for key, down in downs.items()}
    own = _family_modules(family, pairs, alphas)
    out, skipped = own if own is not None else _reference_modules(family, pairs, alphas)
    if not out:
        raise ModelError(
            f"{source.name}: none of its {len(downs)} modules is a layer of a standard {family} model."
        )
    return family, out, skipped, (next(iter(alphas.values()), None) if own is None else None)


def peft_written_family(tensors: dict[str, torch.Tensor]) -> str | None:
    """The family of a LoRA in diffusers/PEFT keys (`….lora_A.weight`, no kohya module) whose runs write that
    format too (`Family.lora_output_formats`: FLUX.1), so its loaders read it; None for any other file."""
    downs = {k.removesuffix(".lora_A.weight"): v for k, v in tensors.items() if k.endswith(".lora_A.weight")}
    if not downs or any(k.startswith("lora_") for k in tensors):
        return None
    family = peft_family(downs)
    return family if "diffusers" in get_family(family).lora_output_formats else None


def read_lora_any(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A LoRA file's kohya tensors and metadata, checked: kohya keys, or the diffusers/PEFT keys of a family that
    writes them (converted in memory, the scale folded into the ups); what `initial_lora` and `load_lora` read.
    SD files in PEFT keys are refused with the `lora convert --to kohya` advice, as before."""
    from ..network.save import check_lora_tensors

    tensors, metadata = read_lora_file(path)
    if peft_written_family(tensors):
        _, tensors, skipped, _ = peft_to_kohya(path, tensors, metadata)
        if skipped:
            logger.warning(
                "%s: %d modules have no kohya layer and are ignored, e.g. %s", path, len(skipped), skipped[0]
            )
    check_lora_tensors(path, tensors)
    return tensors, metadata


def to_kohya(source: Path, target: Path, *, alpha: float | None = None) -> dict[str, int]:
    """A diffusers/PEFT LoRA as a kohya file every loader maps."""
    tensors, metadata = read_lora_file(source)
    family, out, skipped, file_alpha = peft_to_kohya(source, tensors, metadata, alpha)
    if skipped:
        logger.warning(
            "%d modules have no kohya equivalent and were left out, e.g. %s", len(skipped), skipped[0]
        )
    rank = max(int(v.shape[0]) for k, v in out.items() if k.endswith("lora_down.weight"))
    meta = lora_metadata(family, rank, file_alpha or rank, target.stem, ss_converted_from=source.name)
    save_lora_file(
        target, out, meta, next(v for k, v in tensors.items() if k.endswith(".lora_A.weight")).dtype
    )
    return {"converted": len(out) // 3, "skipped": len(skipped)}


def _up(source: Path, tensors: dict[str, torch.Tensor], key: str, down: torch.Tensor) -> torch.Tensor:
    up = tensors.get(key + ".lora_B.weight")
    if up is None or up.dim() != down.dim() or up.shape[1] != down.shape[0]:
        raise ModelError(
            f"{source}: {key}.lora_B.weight is missing or does not match lora_A (rank {down.shape[0]})."
        )
    return up


Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _family_modules(
    family: str, pairs: Pairs, alphas: dict[str, float]
) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    """kohya tensors where the family maps diffusers' names itself (FLUX: q/k/v and linear1 fused again)."""
    scaled = {}
    for key, (down, up) in pairs.items():
        component = key.removeprefix("base_model.model.").split(".", 1)[0]
        rank = down.shape[0]
        scale = alphas.get(component, alphas.get("unet", rank)) / rank
        scaled[key] = (down, up.float() * scale)
    own = get_family(family).kohya_from_diffusers(scaled)
    if own is None:
        return None
    modules, skipped = own
    out: dict[str, torch.Tensor] = {}
    for name, (down, up) in modules.items():
        out.update(module_tensors(name, down, up, down.shape[0]))  # the scale is in the up
    return out, skipped


def _reference_modules(
    family: str, pairs: Pairs, alphas: dict[str, float]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """kohya tensors named through the family's reference model (`unet.…`, `text_encoder.…`)."""
    first_text = get_family(family).text_components[0]
    names = _kohya_names(family)
    out: dict[str, torch.Tensor] = {}
    skipped = []
    for key, (down, up) in pairs.items():
        component, _, path = key.removeprefix("base_model.model.").partition(".")
        if component not in COMPONENTS:
            component, path = "unet", key.removeprefix("base_model.model.")
        role = COMPONENTS[component]
        name = names.get((first_text if role == "te" else role, path))
        if name is None:
            skipped.append(key)
            continue
        out.update(module_tensors(name, down, up, alphas.get(component, down.shape[0])))
    return out, skipped


@lru_cache(maxsize=4)
def _diffusers_paths(family: str) -> dict[str, tuple[str, str]]:
    """kohya name -> (component, diffusers module path) in the family's reference model."""
    return {kohya: key for key, kohya in _kohya_names(family).items()}


def _diffusers_heads(family: str, name: str, module: LoraModule) -> list[tuple[str, torch.Tensor]]:
    """diffusers' module keys of one kohya module, each with its lora_B rows ([]: no diffusers layer)."""
    down, up = module.parts["lora_down.weight"], module.parts["lora_up.weight"]
    own = get_family(family).diffusers_lora_names(name, down, up)
    if own is not None:
        return own
    reverse = _diffusers_paths(family)
    where = reverse.get(name) or reverse.get(name.replace("lora_te1_", "lora_te_"))
    if where is None:
        return []
    prefix = {"unet": "unet", "te": "text_encoder", "te1": "text_encoder", "te2": "text_encoder_2"}
    return [(f"{prefix[where[0]]}.{where[1]}", up)]


def kohya_to_peft(family: str, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """diffusers' PEFT tensors (`unet.…` / `transformer.…` `lora_A/lora_B.weight`, the scale alpha/rank folded
    into lora_B) of a kohya LoRA's tensors, and the modules left out (no diffusers name, or not plain LoRA)."""
    out: dict[str, torch.Tensor] = {}
    skipped = []
    for name, module in group_modules(tensors).items():
        heads = _diffusers_heads(family, name, module) if module.kind == "lora" else []
        if not heads:
            skipped.append(name)
            continue
        scale = module.alpha / module.rank
        for head, up in heads:
            out[f"{head}.lora_A.weight"] = module.parts["lora_down.weight"].clone()  # one copy per layer
            out[f"{head}.lora_B.weight"] = (up.float() * scale).to(up.dtype).contiguous()
    return out, skipped


def to_diffusers(source: Path, target: Path) -> dict[str, int]:
    """A kohya LoRA in diffusers' PEFT key format (`unet.…lora_A.weight`), scale folded into lora_B."""
    from safetensors.torch import save

    tensors, metadata = read_lora_weights(source)
    family = detect_family(tensors, metadata)
    if family not in family_names():
        raise ModelError(
            f"{source.name} is a {family_label(family)} LoRA; conversion to diffusers names covers "
            "SD1/SD2/SDXL files only."
        )
    out, skipped = kohya_to_peft(family, tensors)
    if skipped:
        logger.warning(
            "%d modules were left out (no diffusers name or not plain LoRA), e.g. %s",
            len(skipped),
            skipped[0],
        )
    meta = {"format": "pt", "lorascripts.converted_from": source.name, FOLDED_KEY: "diffusers"}
    atomic_write_bytes(target, save(out, metadata=meta))
    return {"converted": len(out) // 2, "skipped": len(skipped)}
