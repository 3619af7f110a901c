"""`python -m lorascripts lora inspect|selftest|merge|resize|extract|convert`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def _weighted(items: list[str]) -> list[tuple[Path, float]]:
    """`file.safetensors[:weight]` arguments (a Windows drive colon is not a weight)."""
    out = []
    for item in items:
        path, _, weight = item.rpartition(":")
        try:
            out.append((Path(path), float(weight)) if path else (Path(item), 1.0))
        except ValueError:
            out.append((Path(item), 1.0))
    return out


def _dtype(name: str | None):  # noqa: ANN202
    import torch

    return getattr(torch, DTYPES[name]) if name else None


def _refuse_replacing(args: argparse.Namespace, *inputs: object) -> None:
    """The output of a toolbox command never replaces one of its inputs unless --overwrite says so."""
    from ..fileio import refuse_replacing_inputs

    paths = [Path(str(p)) for p in inputs if p]
    refuse_replacing_inputs(Path(args.output), paths, args.overwrite)


def _inspect(args: argparse.Namespace) -> int:
    from .inspect import format_inspection, inspect_lora, inspection_json

    for path in args.lora:
        info = inspect_lora(Path(path))
        print(inspection_json(info) if args.json else format_inspection(info))
    return 0


def _selftest(args: argparse.Namespace) -> int:
    from .selftest import report_json, self_test

    report = self_test(Path(args.lora), args.base)
    print(report_json(report) if args.json else report.summary())
    return 0 if report.ok else 1


def _merge(args: argparse.Namespace) -> int:
    _refuse_replacing(args, args.checkpoint, *(p for p, _ in _weighted(args.lora)))
    if args.checkpoint:
        from .merge import merge_into_checkpoint

        counts = merge_into_checkpoint(Path(args.checkpoint), _weighted(args.lora), Path(args.output))
        print(f"wrote {args.output}: {counts['merged']} modules merged, {counts['skipped']} skipped")
        return 0
    from .merge import merge_loras

    merge_loras(_weighted(args.lora), Path(args.output), rank=args.rank, dtype=_dtype(args.precision))
    print(f"wrote {args.output}")
    return 0


def _resize(args: argparse.Namespace) -> int:
    _refuse_replacing(args, args.lora)
    from .resize import resize_lora

    result = resize_lora(
        Path(args.lora), Path(args.output), rank=args.rank, energy=args.energy, dtype=_dtype(args.precision)
    )
    ranks = sorted(set(result.ranks.values()))
    print(
        f"wrote {args.output}: ranks {ranks[0]}..{ranks[-1]}, at least {result.min_energy:.4f} of each update's energy kept"
    )
    return 0


def _extract(args: argparse.Namespace) -> int:
    _refuse_replacing(args, args.base, args.tuned)
    from .extract import extract_lora

    counts = extract_lora(
        Path(args.base),
        Path(args.tuned),
        Path(args.output),
        rank=args.rank,
        conv_rank=args.conv_rank,
        tokenizer_path=args.tokenizer_path,
        dtype=_dtype(args.precision or "fp16"),
    )
    print(f"wrote {args.output}: {json.dumps(counts)}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    _refuse_replacing(args, args.lora)
    from .convert import to_diffusers, to_kohya

    if args.to == "kohya":
        counts = to_kohya(Path(args.lora), Path(args.output), alpha=args.alpha)
    else:
        counts = to_diffusers(Path(args.lora), Path(args.output))
    print(f"wrote {args.output}: {json.dumps(counts)}")
    return 0


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite", action="store_true", help="allow the output to replace one of the input files"
    )


def add_lora_commands(sub: argparse._SubParsersAction) -> None:
    """The `lora` command group."""
    lora = sub.add_parser("lora", help="inspect, self-test, merge, resize, extract or convert LoRA files")
    group = lora.add_subparsers(dest="lora_command", required=True)
    p = group.add_parser(
        "inspect", help="family, type, rank/alpha, trigger words, training settings, tags, hash"
    )
    p.add_argument("lora", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_inspect)
    p = group.add_parser("selftest", help="does every key apply? (WebUI rules; ComfyUI's when importable)")
    p.add_argument("lora")
    p.add_argument(
        "--base", help="sd1, sd2, sdxl, flux1 or a single-file checkpoint (default: the LoRA's own family)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_selftest)
    p = group.add_parser("merge", help="LoRAs into one LoRA, or (--checkpoint) into a checkpoint")
    p.add_argument("lora", nargs="+", help="path.safetensors[:weight]")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--checkpoint", help="merge into this single-file checkpoint instead")
    p.add_argument(
        "--rank", type=int, help="SVD the merged LoRA down to this rank (default: exact concatenation)"
    )
    p.add_argument("--precision", choices=sorted(DTYPES))
    _add_overwrite(p)
    p.set_defaults(func=_merge)
    p = group.add_parser("resize", help="SVD rank reduction")
    p.add_argument("lora")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--rank", type=int)
    p.add_argument("--energy", type=float, help="keep this fraction of each update's energy (e.g. 0.95)")
    p.add_argument("--precision", choices=sorted(DTYPES))
    _add_overwrite(p)
    p.set_defaults(func=_resize)
    p = group.add_parser("extract", help="LoRA from fine-tuned minus base checkpoint")
    p.add_argument("--base", required=True)
    p.add_argument("--tuned", required=True)
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--conv-rank", type=int)
    p.add_argument("--tokenizer-path")
    p.add_argument("--precision", choices=sorted(DTYPES))
    _add_overwrite(p)
    p.set_defaults(func=_extract)
    p = group.add_parser("convert", help="diffusers/PEFT <-> kohya format")
    p.add_argument("lora")
    p.add_argument("--to", choices=["kohya", "diffusers"], required=True)
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--alpha", type=float, help="lora_alpha of a PEFT file that does not store it")
    _add_overwrite(p)
    p.set_defaults(func=_convert)
