"""`python tools/auto_label.py --input DIR --output DIR/metadata.csv [--captioner blip|florence2|wd14|qwen-vl|
joycaption] ...`"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..doctor import internal_error_message
from ..errors import LoraScriptsError
from .base import DEFAULT_MODELS, VLM_CAPTIONERS, create_captioner
from .labeler import FORMATS, MODES, auto_label
from .postprocess import CaptionRules
from .prompts import PRESETS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="auto_label", description="Caption a folder of images for LoRA training."
    )
    p.add_argument("--input", required=True, type=Path, help="folder of images")
    p.add_argument("--output", type=Path, help="metadata.csv to write (default: <input>/metadata.csv)")
    p.add_argument("--captioner", default="blip", choices=sorted(DEFAULT_MODELS))
    p.add_argument("--model", help="Hugging Face id or local folder (default depends on --captioner)")
    p.add_argument("--format", default="csv", choices=FORMATS, help="metadata.csv, .txt sidecars, or both")
    p.add_argument("--mode", default="overwrite", choices=MODES)
    p.add_argument("--trigger", default="", help="trigger word put first in every caption")
    p.add_argument("--prefix", default="")
    p.add_argument("--suffix", default="")
    p.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="FIND=REPLACE",
        help="text (or /regex/) replacement, repeatable",
    )
    p.add_argument("--max-length", type=int, help="maximum caption length in characters")
    p.add_argument("--no-dedupe", action="store_true", help="keep repeated tags")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--task", default="detailed", help="Florence-2: caption, detailed or more_detailed")
    p.add_argument("--threshold", type=float, default=0.35, help="WD14 general tag threshold")
    p.add_argument("--character-threshold", type=float, default=0.85)
    p.add_argument("--exclude-tags", default="", help="WD14: comma-separated tags never written")
    p.add_argument(
        "--preset", default="long", choices=list(PRESETS), help="qwen-vl / joycaption: what to ask for"
    )
    p.add_argument(
        "--prompt", default="", help="qwen-vl / joycaption: your own instruction instead of --preset"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=160, help="qwen-vl / joycaption: answer length limit"
    )
    p.add_argument(
        "--load-in-4bit", action="store_true", help="qwen-vl / joycaption: 4 bit (CUDA + bitsandbytes)"
    )
    p.add_argument("--allow-remote-code", action="store_true", help="run model code shipped with the model")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--summary", action="store_true", help="end with a JSON summary line (for host programs)")
    return p


def _options(args: argparse.Namespace) -> dict:
    if args.captioner == "florence2":
        return {"task": args.task}
    if args.captioner == "wd14":
        return {
            "general_threshold": args.threshold,
            "character_threshold": args.character_threshold,
            "exclude_tags": tuple(t.strip() for t in args.exclude_tags.split(",") if t.strip()),
        }
    if args.captioner in VLM_CAPTIONERS:
        return {
            "preset": args.preset,
            "prompt": args.prompt,
            "max_new_tokens": args.max_new_tokens,
            "load_in_4bit": args.load_in_4bit,
        }
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    replace = []
    for rule in args.replace:
        find, sep, repl = rule.partition("=")
        if not sep:
            print(f"error: --replace needs FIND=REPLACE, got {rule!r}", file=sys.stderr)
            return 2
        replace.append((find, repl))
    rules = CaptionRules(args.trigger, args.prefix, args.suffix, replace, not args.no_dedupe, args.max_length)
    try:
        captioner = create_captioner(
            args.captioner,
            args.model,
            device=args.device,
            batch_size=args.batch_size,
            allow_remote_code=args.allow_remote_code,
            **_options(args),
        )
        result = auto_label(args.input, captioner, args.output, mode=args.mode, fmt=args.format, rules=rules)
    except LoraScriptsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a message, not a traceback
        if args.debug:
            raise
        print(internal_error_message(exc), file=sys.stderr)
        return 1
    print(
        f"captioned {result.captioned}, kept {result.kept}, resumed {result.resumed}, failed {len(result.failed)}"
    )
    for name, reason in result.failed.items():
        print(f"  could not read {name}: {reason}", file=sys.stderr)
    if args.summary:
        import json

        from ..host.children import SUMMARY_PREFIX

        fields = {k: getattr(result, k) for k in ("captioned", "kept", "resumed", "failed")}
        print(SUMMARY_PREFIX + json.dumps(fields))
    return 0
