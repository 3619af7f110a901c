"""What is in a LoRA file: family, network type, rank/alpha per block, trigger words, training settings,
tag frequency and hashes — as a dict (for --json) and as readable text."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..models.families.lora_detect import detect_family
from ..models.files import first_non_finite
from ..network.save import addnet_hashes, lora_problems, read_lora_file
from .lorafile import group_modules, json_field, tag_frequency

TRAINING_KEYS = (
    "ss_sd_model_name",
    "ss_resolution",
    "ss_learning_rate",
    "ss_unet_lr",
    "ss_text_encoder_lr",
    "ss_max_train_steps",
    "ss_num_epochs",
    "ss_batch_size_per_device",
    "ss_optimizer",
    "ss_lr_scheduler",
    "ss_mixed_precision",
    "ss_clip_skip",
    "ss_noise_offset",
    "ss_min_snr_gamma",
    "ss_seed",
    "ss_training_started_at",
    "ss_training_finished_at",
    "ss_num_train_images",
)


def _block(name: str) -> str:
    """A coarse block label for grouping ranks: `te`, `te2`, `unet input_blocks_4`, ..."""
    if name.startswith("lora_te"):
        return name.split("_")[1]
    m = re.match(
        r"lora_unet_((?:down|up)_blocks_\d+|mid_block|(?:input|output)_blocks_\d+|middle_block"
        r"|(?:double|single|joint)_blocks_\d+)",
        name,
    )
    return f"unet {m[1]}" if m else "unet other"


def inspect_lora(path: Path, top_tags: int = 20) -> dict[str, Any]:
    """Everything a user asks about a LoRA file, JSON-serialisable."""
    path = Path(path)
    tensors, metadata = read_lora_file(path)
    problems = lora_problems(tensors)
    if (bad := first_non_finite(tensors)) is not None:
        problems.append(f"tensor {bad} contains NaN/inf values")
    # damaged modules are reported, not measured: their rank/alpha would be meaningless
    modules = {n: m for n, m in group_modules(tensors).items() if not any(f" {n} " in p for p in problems)}
    kinds = Counter(m.kind for m in modules.values())
    blocks: dict[str, set[tuple[int, float]]] = {}
    for name, module in modules.items():
        blocks.setdefault(_block(name), set()).add((module.rank, module.alpha))
    ranks = {b: sorted(v) for b, v in sorted(blocks.items())}
    distinct = {ra for v in blocks.values() for ra in v}
    tags: Counter = Counter()
    for counts in tag_frequency(metadata).values():
        tags.update(counts)
    model_hash, legacy = addnet_hashes(path.read_bytes())
    args = json_field(metadata, "ss_network_args")
    network = args.get("algo") if isinstance(args, dict) and args.get("algo") else None
    if network is None and modules:
        # LoCon = LoRA on 3×3 convolutions too; plain LoRA already has SD's 1×1 proj_in/proj_out convolutions
        network = "locon" if any(m.is_conv3x3 for m in modules.values()) else max(kinds, key=kinds.get)
    return {
        "file": path.name,
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "family": detect_family(tensors, metadata),
        "network": network,
        "modules": len(modules),
        "tensors": len(tensors),
        "dtype": str(next(iter(tensors.values())).dtype).removeprefix("torch.") if tensors else None,
        "rank_alpha": sorted(distinct)[0] if len(distinct) == 1 else "varies",
        "rank_alpha_by_block": {b: [list(x) for x in v] for b, v in ranks.items()},
        "text_encoder": any(n.startswith("lora_te") for n in modules),
        "trigger_words": metadata.get("modelspec.trigger_phrase", "")
        or (tags.most_common(1)[0][0] if tags else ""),
        "top_tags": tags.most_common(top_tags),
        "training": {k.removeprefix("ss_"): metadata[k] for k in TRAINING_KEYS if k in metadata},
        "output_name": metadata.get("ss_output_name", ""),
        "hash": {
            "stored": metadata.get("sshs_model_hash", ""),
            "computed": model_hash,
            "legacy": legacy,
        },
        "problems": problems,
    }


def format_inspection(info: dict[str, Any]) -> str:
    """The inspection as aligned text lines."""
    lines = [f"{info['file']}  ({info['size_mb']} MB, {info['dtype']})"]
    for key in ("family", "network", "modules", "rank_alpha", "text_encoder", "trigger_words", "output_name"):
        lines.append(f"  {key:14} {info[key]}")
    if info["rank_alpha"] == "varies":
        for block, values in info["rank_alpha_by_block"].items():
            lines.append(f"    {block:22} rank/alpha {values}")
    if info["training"]:
        lines.append("  training       " + ", ".join(f"{k}={v}" for k, v in info["training"].items()))
    if info["top_tags"]:
        lines.append("  top tags       " + ", ".join(f"{t} ({n})" for t, n in info["top_tags"][:10]))
    stored, actual = info["hash"]["stored"], info["hash"]["computed"]
    verdict = "matches" if stored == actual else ("not stored" if not stored else "MISMATCH (file changed?)")
    lines.append(f"  hash           {actual[:16]}… ({verdict})")
    lines += [f"  PROBLEM        {p}" for p in info["problems"]]
    return "\n".join(lines)


def inspection_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2)
