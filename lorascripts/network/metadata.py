"""kohya `ss_*` and modelspec metadata of a LoRA file (LORA_FORMAT.md §7): what A1111, ComfyUI and Civitai show."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models.families import Family

TOOL_VERSION = "lora-scripts/0.1"


@dataclass
class LoraMetadataInput:
    """Everything the metadata is built from."""

    family: Family
    v_prediction: bool
    output_name: str
    network_module: str
    rank: int
    alpha: float
    network_args: dict[str, str]
    training: dict[str, str] = field(default_factory=dict)
    steps: int = 0
    epoch: int = 0  # 1-based epoch reached (kohya), 0 before any step
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)
    dataset_dirs: dict[str, dict[str, int]] = field(default_factory=dict)
    bucket_info: dict | None = None
    base_model_name: str = ""
    resolution: tuple[int, int] = (512, 512)
    seed: int = 0
    clip_skip: int = 1
    trigger_words: list[str] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float | None = None
    session_id: int = 0
    config_yaml: str = ""
    title: str = ""
    author: str = ""
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def build_kohya_metadata(data: LoraMetadataInput) -> dict[str, str]:
    """All metadata strings; values are str like kohya writes them (None -> "None")."""
    width, height = data.resolution
    fields = data.family.lora_metadata(v_prediction=data.v_prediction, resolution=max(width, height))
    meta = {
        "ss_network_module": data.network_module,
        "ss_network_dim": str(data.rank),
        "ss_network_alpha": str(float(data.alpha)),
        **{k: v for k, v in fields.items() if k.startswith("ss_")},
        "ss_output_name": data.output_name,
        "ss_training_started_at": str(data.started_at),
        "ss_training_finished_at": str(data.finished_at),
        "ss_session_id": str(data.session_id),
        "ss_steps": str(data.steps),
        "ss_epoch": str(data.epoch),
        "ss_resolution": str((width, height)),
        "ss_seed": str(data.seed),
        "ss_clip_skip": str(data.clip_skip) if data.clip_skip > 1 else "None",
        "ss_sd_model_name": data.base_model_name,
        "ss_tag_frequency": json.dumps(data.tag_frequency, ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(data.dataset_dirs, ensure_ascii=False),
        "ss_training_comment": data.description or "None",
        **data.training,
    }
    if data.network_args:
        meta["ss_network_args"] = json.dumps(data.network_args)
    # kohya writes "null" when bucketing was off; every reader takes it (it is JSON)
    meta["ss_bucket_info"] = json.dumps(data.bucket_info)
    meta.update(_modelspec(data, fields))
    meta["ls_tool"] = TOOL_VERSION
    if data.config_yaml:
        meta["ls_config"] = data.config_yaml
    meta.update(data.extra)
    return meta


def _modelspec(data: LoraMetadataInput, family_fields: dict[str, str]) -> dict[str, str]:
    width, height = data.resolution
    spec = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.title": data.title or data.output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": datetime.fromtimestamp(data.finished_at or data.started_at).strftime(
            "%Y-%m-%dT%H:%M:%S"
        ),
        "modelspec.prediction_type": "v" if data.v_prediction else "epsilon",
        **{k: v for k, v in family_fields.items() if k.startswith("modelspec.")},
    }
    if data.clip_skip > 1:
        spec["modelspec.encoder_layer"] = str(data.clip_skip)
    if data.author:
        spec["modelspec.author"] = data.author
    if data.description:
        spec["modelspec.description"] = data.description
    if data.trigger_words:
        spec["modelspec.trigger_phrase"] = ", ".join(data.trigger_words)
    return spec


def merge_training_counters(initial: dict[str, str], step: int, epoch: int) -> tuple[int, int]:
    """Steps/epochs including those of the LoRA an incremental run started from."""

    def number(key: str) -> int:
        try:
            return int(initial.get(key, "0"))
        except ValueError:
            return 0

    return number("ss_steps") + step, number("ss_epoch") + epoch
