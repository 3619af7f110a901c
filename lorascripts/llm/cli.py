"""`python -m lorascripts llm check|export`: is a text adapter servable, and the adapter as GGUF for llama.cpp
and Ollama."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError


def add_llm_commands(sub: argparse._SubParsersAction) -> None:
    """The `llm` command group."""
    llm = sub.add_parser("llm", help="text-LoRA adapters: serving check, export").add_subparsers(
        dest="llm_command", required=True
    )
    check = llm.add_parser(
        "check", help="will vLLM and TGI serve this adapter folder? prints the server flags"
    )
    check.add_argument("adapter", help="adapter folder (adapter_config.json + adapter_model.safetensors)")
    check.add_argument("--name", help="the adapter's name on the server (default: the folder name)")
    check.add_argument(
        "--base", help="the base model to serve (default: the adapter's base_model_name_or_path)"
    )
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.set_defaults(func=_cmd_check)
    export = llm.add_parser("export", help="the adapter as a llama.cpp / Ollama GGUF LoRA adapter")
    export.add_argument("adapter", help="adapter folder written by `task: llm` training")
    export.add_argument("--format", choices=["gguf"], default="gguf")
    export.add_argument("-o", "--output", help="the .gguf to write (default: <adapter>/../<name>.gguf)")
    export.add_argument(
        "--base", help="base model folder or id (default: the adapter's base_model_name_or_path)"
    )
    export.add_argument("--dtype", choices=["f32", "f16"], default="f32", help="tensor type in the file")
    export.add_argument(
        "--ollama-from", help="FROM line of the Ollama Modelfile written beside the file (default: the base)"
    )
    export.add_argument(
        "--with-base", action="store_true", help="also write the base model as GGUF (the Modelfile's FROM)"
    )
    export.add_argument(
        "--merged", action="store_true", help="also write base + adapter merged as one GGUF model"
    )
    export.set_defaults(func=_cmd_export)


def _cmd_check(args: argparse.Namespace) -> int:
    from .serving import check_adapter

    report = check_adapter(args.adapter, name=args.name, base=args.base)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from .gguf_export import export_gguf_adapter, write_modelfile
    from .serving import read_adapter_config

    adapter = Path(args.adapter)
    base = args.base or read_adapter_config(adapter).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter}/adapter_config.json names no base model; pass --base FOLDER_OR_ID.")
    out = Path(args.output) if args.output else adapter.parent / f"{adapter.name}.gguf"
    if out.suffix != ".gguf":
        raise ConfigError(f"--output {out}: a GGUF file name ends in .gguf.")
    if args.with_base and not Path(base).is_dir():
        raise ConfigError(f"--with-base needs the base model as a local folder, not {base!r}; pass --base.")
    export_gguf_adapter(adapter, out, base, args.dtype)
    print(f"GGUF adapter written to {out}")
    base_file = "BASE.gguf"
    if args.with_base or args.merged:
        from .gguf_model import export_gguf_model, export_merged_gguf

        if args.with_base:
            base_file = str(export_gguf_model(base, out.with_name(f"{Path(base).name}-base.gguf"), "f16"))
            print(f"base model as GGUF: {base_file}")
        if args.merged:
            merged = export_merged_gguf(base, adapter, out.with_name(f"{out.stem}-merged.gguf"), "f16")
            print(f"merged model as GGUF: {merged} (Ollama: FROM {merged}, no ADAPTER line)")
    ollama_from = args.ollama_from or (base_file if args.with_base else base)
    modelfile = write_modelfile(out.parent, ollama_from, out)
    print(f"Ollama Modelfile: {modelfile} (ollama create NAME -f {modelfile})")
    print(f"llama.cpp: llama-cli -m {base_file} --lora {out}")
    return 0
