"""Command line: `python -m lorascripts train --config x.yaml [--set key=value ...]` (and `train.py`).

User errors print as one clear message without a traceback (exit code 2 for a bad config, see errors.py);
`--debug` shows the traceback. Ctrl+C / SIGTERM ask the run to save a checkpoint and stop cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .doctor import internal_error_message
from .errors import LoraScriptsError, StopRequested


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("PIL", "urllib3", "httpx", "matplotlib", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA from a YAML config")
    p.add_argument("--config", "-c", help="YAML config file (see configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set learning_rate=2e-4 (repeatable)",
    )
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--keep-stop-file",
        action="store_true",
        help="keep a STOP file found at start (the run then stops after its first step): for a host that removes a "
        "stale one before starting us, so a Cancel pressed while the run starts is not lost",
    )
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import dump_config, load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        if cfg.task == "image":  # what the run will train with: the family's values for the keys left empty
            from .models.run_defaults import with_family_defaults

            cfg, filled = with_family_defaults(cfg)
            print(f"# {filled.describe()}")
        print(dump_config(cfg), end="")
        return 0
    from .run.events import StopControl
    from .train.trainer import train

    stop = StopControl(None)

    def _on_signal(signum: int, _frame: object) -> None:
        stop.request(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    stop.stop_file = Path(cfg.output_dir) / "STOP"
    if not args.keep_stop_file:
        stop.clear_stale_file()
    if cfg.task == "llm":
        from .llm.train import train_llm

        outcome = train_llm(cfg, stop=stop)
        print(f"adapter written to {outcome.adapter_dir} (eval loss {outcome.eval_loss})")
        return 0
    result = train(cfg, stop=stop)
    print(f"LoRA written to {result.lora_path}")
    if result.compat_ok is False:
        print("warning: the WebUI self-test found keys that would not load; see train.log", file=sys.stderr)
    return 0


def _add_config_reference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config-reference", help="print (or --write into README.md) the config key reference")
    p.add_argument(
        "--write", metavar="README", nargs="?", const="README.md", help="update the README in place"
    )
    p.set_defaults(func=_cmd_config_reference)


def _cmd_config_reference(args: argparse.Namespace) -> int:

    from .config.reference import BEGIN, END, config_reference_markdown

    text = config_reference_markdown()
    if not args.write:
        print(text, end="")
        return 0
    readme = Path(args.write)
    content = readme.read_text(encoding="utf-8")
    start, end = content.index(BEGIN), content.index(END) + len(END)
    readme.write_text(content[:start] + text.rstrip("\n") + content[end:], encoding="utf-8")
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="text from a causal LM + a trained text LoRA adapter")
    p.add_argument("prompt")
    p.add_argument("--base", required=True, help="the base model (folder or Hugging Face id)")
    p.add_argument("--lora", help="adapter folder written by `task: llm` training")
    p.add_argument("--system", default="")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chat-template", choices=["chatml", "plain"])
    p.add_argument("--allow-remote-code", action="store_true")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args: argparse.Namespace) -> int:
    from .llm.generate import generate_text
    from .llm.model import load_for_generation

    model, tokenizer = load_for_generation(args.base, args.lora, args.allow_remote_code)
    print(
        generate_text(
            model,
            tokenizer,
            args.prompt,
            system=args.system,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            template=args.chat_template,
        )
    )
    return 0


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check that this Python has every package the engine needs, working")
    p.add_argument("--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor_report

    lines, ok = doctor_report(args.quiet)
    for line in lines:
        print(line)
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The `lorascripts` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="lorascripts", description="Train and manage LoRAs.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_config_reference(sub)
    from .toolbox.cli import add_lora_commands

    add_lora_commands(sub)
    _add_generate(sub)
    _add_doctor(sub)
    sub.add_parser("caption", help="caption a folder (the options of tools/auto_label.py)", add_help=False)
    from .llm.cli import add_llm_commands

    add_llm_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["caption"]:  # tools/auto_label.py's options, as the hosts' captioning children use them
        from .caption.cli import main as caption_main

        return caption_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug)
    try:
        return args.func(args)
    except StopRequested as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except LoraScriptsError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a message, not a traceback
        if args.debug:
            raise
        from .doctor import dependency_error, import_failure

        if import_failure(exc) is not None:  # a package missing from, or not fitting, this Python
            error = dependency_error(exc)
            print(f"error: {error}", file=sys.stderr)
            return error.exit_code
        print(internal_error_message(exc), file=sys.stderr)
        return 1
