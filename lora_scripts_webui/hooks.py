"""The few WebUI (AUTOMATIC1111 / Forge) hooks the tab uses, each with a fallback outside the WebUI.

Everything WebUI-specific goes through this module: `modules.shared` (options, command-line flags),
`modules.sd_models` (checkpoint list, unloading the generation model while training), `modules.paths`
(models and data folders) and the built-in Lora extension's `networks` module (refreshing the Lora list).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from lorascripts.host.presets import PRESET_CHOICES

logger = logging.getLogger(__name__)

SECTION = ("lora_scripts", "LoRA Training")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
# Forge ships the tokenizers of the models it runs as diffusers folders under this one (e.g.
# black-forest-labs/FLUX.1-dev/tokenizer_2); A1111 keeps them in the Hugging Face cache.
FORGE_TOKENIZER_ROOT = "backend/huggingface"


def _modules(name: str) -> Any | None:
    """`modules.<name>` of the running WebUI, or None outside it."""
    try:
        return __import__(f"modules.{name}", fromlist=[name])
    except ImportError:
        return None


def option(key: str, default: Any) -> Any:
    """A value from the WebUI settings page (our own keys start with `lora_scripts_`)."""
    shared = _modules("shared")
    value = getattr(getattr(shared, "opts", None), key, None)
    return default if value in (None, "") else value


def webui_root() -> Path:
    paths = _modules("paths")
    return Path(getattr(paths, "script_path", None) or Path.cwd())


def reachable_from_network() -> bool:
    """True when others can reach this WebUI (`--listen`, `--share`, a non-loopback `--server-name`) and its
    owner has not said to trust them (`--enable-insecure-extension-access`, the WebUI's own switch for that)."""
    from lorascripts.host.safety import is_loopback

    flags = getattr(_modules("shared"), "cmd_opts", None)
    if flags is None or getattr(flags, "enable_insecure_extension_access", False):
        return False
    name = getattr(flags, "server_name", None)
    return bool(
        getattr(flags, "listen", False) or getattr(flags, "share", False) or (name and not is_loopback(name))
    )


def models_dir() -> Path:
    paths = _modules("paths")
    return Path(getattr(paths, "models_path", None) or webui_root() / "models")


def lora_dir() -> Path:
    """Where finished LoRAs go: our setting, else the WebUI's `--lora-dir`, else models/Lora."""
    chosen = option("lora_scripts_output_dir", "")
    if chosen:
        return Path(chosen).expanduser()
    shared = _modules("shared")
    flag = getattr(getattr(shared, "cmd_opts", None), "lora_dir", None)
    return Path(flag) if flag else models_dir() / "Lora"


def work_dir() -> Path:
    """Runs (checkpoints, samples, logs) live under the WebUI's data folder: outputs/lora-scripts/."""
    paths = _modules("paths")
    return Path(getattr(paths, "data_path", None) or webui_root()) / "outputs" / "lora-scripts"


def checkpoints() -> dict[str, str]:
    """Checkpoint title -> file, as the WebUI lists them (a folder scan when the list is unavailable)."""
    sd_models = _modules("sd_models")
    listed = getattr(sd_models, "checkpoints_list", None)
    if listed:
        return {title: info.filename for title, info in listed.items()}
    folder = models_dir() / "Stable-diffusion"
    files = sorted(p for p in folder.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES) if folder.is_dir() else []
    return {str(p.relative_to(folder)): str(p) for p in files}


# where each kind of part file lives (lorascripts.host.parts): the command-line flag, then the models/ folder
# (Forge keeps FLUX.1's ae.safetensors in models/VAE and clip_l / t5xxl files in models/text_encoder)
PART_FOLDERS = {"vae": ("vae_dir", "VAE"), "text_encoder": ("text_encoder_dir", "text_encoder")}


def part_files(kind: str) -> dict[str, str]:
    """Title -> file of the part files of one kind ("vae", "text_encoder"): the flag's folder, then models/."""
    flag, name = PART_FOLDERS[kind]
    chosen = getattr(getattr(_modules("shared"), "cmd_opts", None), flag, None)
    files: dict[str, str] = {}
    for folder in ([Path(chosen)] if chosen else []) + [models_dir() / name]:
        found = sorted(p for p in folder.rglob("*.safetensors") if p.is_file()) if folder.is_dir() else []
        for path in found:
            files.setdefault(str(path.relative_to(folder)), str(path))
    return files


def refresh_checkpoints() -> dict[str, str]:
    sd_models = _modules("sd_models")
    if sd_models is not None and hasattr(sd_models, "list_models"):
        sd_models.list_models()
    return checkpoints()


def current_checkpoint() -> str | None:
    """The title of the checkpoint the WebUI generates with now."""
    title, listed = option("sd_model_checkpoint", None), checkpoints()
    return title if title in listed else next(iter(listed), None)


def tokenizer_roots() -> list[str]:
    """The folder where this WebUI keeps the tokenizers it ships (Forge), for the training child to search."""
    folder = webui_root() / FORGE_TOKENIZER_ROOT
    return [str(folder)] if folder.is_dir() else []


def refresh_loras() -> bool:
    """Re-read the Lora folder so `<lora:name:w>` works at once (the built-in Lora extension's list)."""
    networks = sys.modules.get("networks")
    refresh = getattr(networks, "list_available_networks", None)
    if refresh is None:
        return False
    try:
        refresh()
        return True
    except Exception:  # the WebUI's own code; a failure only means the user presses Refresh
        logger.exception("could not refresh the WebUI's Lora list")
        return False


def _call_sd_models(name: str, failure: str) -> bool:
    """Call `modules.sd_models.<name>()` when the WebUI has it; a failure is logged, never raised."""
    fn = getattr(_modules("sd_models"), name, None)
    if fn is None:
        return False
    try:
        fn()
        return True
    except Exception:  # the WebUI's own code; training goes on either way
        logger.exception(failure)
        return False


def unload_generation_model() -> bool:
    """Free the GPU for training: the WebUI's own unload (A1111 and Forge both have it)."""
    return _call_sd_models(
        "unload_model_weights", "could not unload the WebUI's model; training shares the GPU"
    )


def reload_generation_model() -> None:
    _call_sd_models("reload_model_weights", "could not reload the WebUI's model; select it again in the list")


def register_settings() -> None:
    """Our two entries on the WebUI settings page (on_ui_settings callback)."""
    shared = _modules("shared")
    if shared is None:
        return
    import gradio as gr

    shared.opts.add_option(
        "lora_scripts_output_dir",
        shared.OptionInfo(
            "", "Output folder for trained LoRAs (empty: the WebUI's Lora folder)", section=SECTION
        ),
    )
    shared.opts.add_option(
        "lora_scripts_default_preset",
        shared.OptionInfo(
            "style",
            "Default training preset",
            gr.Dropdown,
            {"choices": list(PRESET_CHOICES)},
            section=SECTION,
        ),
    )
