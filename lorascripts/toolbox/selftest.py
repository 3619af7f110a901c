"""Will this LoRA work? Every key checked against a base model under each loader's rules, plus the file-level
problems of LORA_FORMAT.md §8–§9 (header, metadata, stray tensors, PEFT names, NaN, wrong family)."""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from ..models.families import family_names, get_family
from ..models.families.lora_detect import detect_family, family_label
from ..network.save import lora_problems, read_lora_file
from ..network.webui_check import CompatReport, check_webui_compat
from .lorafile import is_json, json_field
from .reference import checkpoint_family, checkpoint_shapes, reference_shapes

JSON_KEYS = ("ss_tag_frequency", "ss_dataset_dirs", "ss_network_args", "ss_bucket_info")


@dataclass
class SelfTestReport:
    lora: str
    lora_family: str
    against: str
    base_family: str
    webui: CompatReport
    comfyui: dict[str, Any] | None = None  # {"applied": n, "not_loaded": [...]} when ComfyUI is importable
    problems: list[str] = field(default_factory=list)  # fatal or silently-dropping issues
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        comfy_ok = self.comfyui is None or not self.comfyui.get("not_loaded")
        return self.webui.ok and not self.problems and comfy_ok

    def summary(self) -> str:
        lines = [f"{self.lora} ({self.lora_family}) against {self.against} ({self.base_family}):"]
        hosts = get_family(self.base_family).webui_hosts if self.base_family in family_names() else "WebUI"
        lines.append(f"  {hosts}: {self.webui.summary()}")
        if self.comfyui is not None:
            missing = self.comfyui["not_loaded"]
            lines.append(
                f"  ComfyUI: {self.comfyui['applied']} modules patched, {len(missing)} keys not loaded"
                + (f", e.g. {missing[0]}" if missing else "")
            )
        lines += [f"  problem: {p}" for p in self.problems] + [f"  warning: {w}" for w in self.warnings]
        lines.append("  verdict: " + ("every key applies" if self.ok else "NOT fully compatible"))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"], data["webui"]["ok"] = self.ok, self.webui.ok
        return data


def _header_problems(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        raw = fh.read(10)
    if len(raw) < 10:
        return ["the file is too short to be a .safetensors file"]
    size = struct.unpack("<Q", raw[:8])[0]
    if raw[8:10] != b'{"':
        return ['the header does not start with {" : AUTOMATIC1111 refuses such files (LORA_FORMAT.md §9.10)']
    if size > 100 * 1024 * 1024:
        return [f"the header is {size} bytes: readers refuse headers over 100 MB"]
    return []


def _file_problems(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], family: str
) -> tuple[list[str], list[str]]:
    problems, warnings = _header_problems(path), []
    stray = [k for k in tensors if not k.startswith("lora_")]
    peft = [k for k in stray if ".lora_A." in k or ".lora_B." in k]
    if peft:
        problems.append(
            f"{len(peft)} keys are in diffusers/PEFT format (e.g. {peft[0]}): AUTOMATIC1111 drops them all; "
            "convert with `python -m lorascripts lora convert --to kohya`"
        )
    elif stray:
        problems.append(
            f"{len(stray)} tensors are not LoRA weights (e.g. {stray[0]}); diffusers refuses the file"
        )
    problems += [p for p in lora_problems(tensors) if p.startswith("module ") or not tensors]
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t.float()).all()]
    if bad:
        problems.append(f"{len(bad)} tensors contain NaN/inf (e.g. {bad[0]}): images would turn black")
    for key in (k for k in JSON_KEYS if k in metadata):
        value = json_field(metadata, key)
        if not is_json(metadata, key):
            warnings.append(f"metadata {key} is not valid JSON; the WebUI's tag list breaks on it")
        elif key == "ss_tag_frequency" and not isinstance(value, dict):
            warnings.append("metadata ss_tag_frequency is not a JSON object")
    warnings += _version_warning(family, metadata)
    name = metadata.get("ss_output_name")
    if name and name != path.stem:
        warnings.append(f"ss_output_name is {name!r} but the file is {path.stem!r}: the WebUI alias differs")
    return problems, warnings


def _version_warning(family: str, metadata: dict[str, str]) -> list[str]:
    """The WebUI lists a file of some families as SD1 (and hides its card) unless its version says otherwise."""
    if family not in family_names():
        return []
    known = get_family(family)
    if not known.webui_needs_version or known.made_for(metadata.get("ss_base_model_version", "")):
        return []
    wanted = known.lora_metadata(v_prediction=False, resolution=0)["ss_base_model_version"]
    return [f"no ss_base_model_version={wanted}: the WebUI lists it as SD1 and hides its card"]


def comfyui_unapplied(lora_sd: dict[str, Any], model: Any, clip: Any) -> list[str]:
    """Keys ComfyUI's own key map cannot place (it logs them as `lora key not loaded`); needs ComfyUI."""
    return _unplaced(lora_sd, _comfyui_key_map(model, clip))


def _comfyui_key_map(model: Any, clip: Any) -> frozenset[str]:
    import comfy.lora

    key_map: dict = {}
    if model is not None:
        key_map = comfy.lora.model_lora_keys_unet(model.model, key_map)
    if clip is not None:
        key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    return frozenset(key_map)


def _unplaced(lora_sd: dict[str, Any], key_map: frozenset[str]) -> list[str]:
    import comfy.lora_convert

    converted = comfy.lora_convert.convert_lora(lora_sd)
    return sorted(k for k in converted if k.split(".", 1)[0] not in key_map)


@functools.lru_cache(maxsize=2)
def _checkpoint_key_map(checkpoint: str, _mtime_ns: int, _size: int) -> frozenset[str]:
    """ComfyUI's key map of a checkpoint, kept per file version: inspecting several LoRAs against one checkpoint
    (a graph of Inspect nodes) loads it once, and only the names stay in memory."""
    import comfy.sd

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(checkpoint, output_vae=False)
    return _comfyui_key_map(model, clip)


def comfyui_check(lora: Path, checkpoint: Path) -> dict[str, Any] | None:
    """ComfyUI's mapping for this file and checkpoint, when ComfyUI is importable in this Python."""
    try:
        import comfy.sd
        import comfy.utils
    except ImportError:
        return None
    stat = Path(checkpoint).stat()
    key_map = _checkpoint_key_map(str(checkpoint), stat.st_mtime_ns, stat.st_size)
    lora_sd = comfy.utils.load_torch_file(str(lora), safe_load=True)
    missing = _unplaced(lora_sd, key_map)
    modules = {k.split(".", 1)[0] for k in lora_sd}
    return {"applied": len(modules - {k.split(".", 1)[0] for k in missing}), "not_loaded": missing}


def _loader_view(
    lora: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> dict[str, torch.Tensor]:
    """The modules a file's loaders see. diffusers/PEFT keys of a family whose loaders map them (FLUX.1: Forge's
    and ComfyUI's key maps hold diffusers' `transformer.…` and `text_encoder.…` names) are checked as the kohya
    modules they convert to, and the keys that fit no layer stay as they are (unmatched); other PEFT files are
    reported as such."""
    from .convert import peft_to_kohya, peft_written_family

    if peft_written_family(tensors) is None:
        return tensors
    _, kohya, skipped, _ = peft_to_kohya(lora, tensors, metadata)
    left = set(skipped)
    return {**kohya, **{k: v for k, v in tensors.items() if k.rsplit(".lora_", 1)[0] in left}}


def _report(
    lora: Path,
    loaded: tuple[dict[str, torch.Tensor], dict[str, str]],
    model: dict[str, tuple[int, ...]],
    base_family: str,
    against: str,
) -> SelfTestReport:
    tensors, metadata = loaded
    tensors = _loader_view(lora, tensors, metadata)
    family = detect_family(tensors, metadata)
    shapes = {k: tuple(t.shape) for k, t in tensors.items() if k.startswith("lora_")}
    problems, warnings = _file_problems(lora, tensors, metadata, family)
    if family != base_family and family != "unknown":
        problems.insert(
            0,
            f"this LoRA was trained for {family_label(family)} but the base model is {family_label(base_family)}",
        )
    others = [k for k in tensors if not k.startswith("lora_")]
    webui = check_webui_compat(shapes, model, get_family(base_family), others)
    return SelfTestReport(lora.name, family, against, base_family, webui, None, problems, warnings)


def self_test_shapes(
    lora: Path, model: dict[str, tuple[int, ...]], base_family: str, against: str
) -> SelfTestReport:
    """The self-test against known layer shapes (e.g. the base model a run just trained on)."""
    return _report(lora, read_lora_file(lora), model, base_family, against)


def self_test(lora: Path, against: str | Path | None = None) -> SelfTestReport:
    """Check `lora` against a family name (sd1/sd2/sdxl) or a single-file checkpoint (default: its own family)."""
    lora = Path(lora)
    loaded = read_lora_file(lora)
    target = str(against) if against else _own_family(lora, *loaded)
    if target in family_names():
        return _report(lora, loaded, reference_shapes(target), target, target)
    if not Path(target).is_file():
        raise ModelError(
            f"--base must be {', '.join(family_names())} or a .safetensors checkpoint; {target!r} is neither."
        )
    ckpt = checkpoint_shapes(Path(target))
    family = checkpoint_family(ckpt)
    ckpt = {**family.companion_shapes(Path(target), ckpt), **ckpt}  # e.g. CLIP-L beside a FLUX transformer
    model = {name: shape for name, (_, shape) in family.checkpoint_layers(ckpt).items()}
    report = _report(lora, loaded, model, family.name, Path(target).name)
    report.comfyui = comfyui_check(lora, Path(target))
    return report


def _own_family(lora: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """The SD family to check `lora` against when no base is given; other families are refused, not checked
    under SD rules."""
    family = detect_family(tensors, metadata)
    if family in family_names():
        return family
    example = next(iter(tensors), "none")
    if family == "unknown":
        raise ModelError(
            f"{lora.name}: its base model family is unknown (no ss_base_model_version or "
            f"modelspec.architecture, keys like {example}). Pass --base {'|'.join(family_names())} or a checkpoint."
        )
    raise ModelError(
        f"{lora.name} is a {family_label(family)} LoRA (keys like {example}); the self-test knows the "
        f"loading rules of {', '.join(f.upper() for f in family_names())} only, so it cannot check this file."
    )


def report_json(report: SelfTestReport) -> str:
    return json.dumps(report.to_dict(), indent=2, default=str)
