"""TrainLoRA: trains in a child process, streams progress to ComfyUI, puts the LoRA into the loras folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..lorascripts.host.names import safe_name
from .paths import CATEGORY, checked_dataset, loras_dir, read_roots, tokenizer_folder, work_root

logger = logging.getLogger(__name__)
EVENT = "lora_scripts.progress"


def _checkpoints() -> list[str]:
    import folder_paths

    return folder_paths.get_filename_list("checkpoints")


def _chart(losses: list[tuple[int, float]], validation: list[tuple[int, float]]) -> Any:
    """The loss chart (training and validation loss) as an IMAGE (1, H, W, 3)."""
    import numpy as np
    import torch

    from ..lorascripts.host.charts import loss_chart

    chart = loss_chart(losses, validation=validation)
    return torch.from_numpy(np.asarray(chart, dtype=np.float32) / 255.0)[None]


def _samples(paths: list[str]) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    images = [
        np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in paths if Path(p).is_file()
    ]
    if not images:
        return torch.zeros(1, 64, 64, 3)
    shape = images[0].shape
    return torch.from_numpy(np.stack([i for i in images if i.shape == shape]))


def _view_ref(path: str) -> dict[str, str]:
    """How ComfyUI's /view endpoint addresses a file in the output folder."""
    import folder_paths

    rel = Path(path).resolve().relative_to(Path(folder_paths.get_output_directory()).resolve())
    return {"filename": rel.name, "subfolder": rel.parent.as_posix(), "type": "output"}


def _from_preset(key: str, maximum: float, tooltip: str) -> dict[str, Any]:
    """A widget whose default 0 means "the preset's value": ComfyUI sends every widget's value, so a default
    equal to one preset's value would silently override the others (character trained at style's rank)."""
    from ..lorascripts.host.presets import preset_summary

    return {
        "default": 0,
        "min": 0,
        "max": maximum,
        "tooltip": f"{tooltip} 0: the preset's ({preset_summary(key)}).",
    }


class TrainLoRA:
    """Train a LoRA on a DATASET from a checkpoint; the result is usable by any LoRA loader right away."""

    CATEGORY = CATEGORY
    FUNCTION = "train"
    RETURN_TYPES = ("STRING", "IMAGE", "IMAGE")
    RETURN_NAMES = ("lora_name", "loss_chart", "samples")
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Train a kohya-format LoRA (loads in ComfyUI, A1111/Forge, diffusers). Cancel saves a checkpoint."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "ckpt_name": (
                    _checkpoints(),
                    {"tooltip": "Base checkpoint (SD1.x, SD2.x or SDXL) from models/checkpoints."},
                ),
                "dataset": ("LORA_SCRIPTS_DATASET", {"tooltip": "From Load Dataset or Auto Caption."}),
                "lora_name": (
                    "STRING",
                    {"default": "my_lora", "tooltip": "File name in models/loras (no extension)."},
                ),
                "preset": (
                    ["style", "character", "concept", "custom"],
                    {
                        "default": "style",
                        "tooltip": "Sensible defaults for the job (rank, alpha, learning rate, epochs and more); "
                        "a value below that is not 0 overrides the preset's.",
                    },
                ),
                "rank": ("INT", _from_preset("lora_rank", 1024, "LoRA rank (dim): capacity and file size.")),
                "alpha": (
                    "FLOAT",
                    _from_preset("lora_alpha", 1024.0, "LoRA alpha; update scaled by alpha/rank."),
                ),
                "steps": (
                    "INT",
                    {"default": 1000, "min": 0, "max": 100000, "tooltip": "Optimizer steps (0: use epochs)."},
                ),
                "epochs": ("INT", _from_preset("epochs", 1000, "Passes over the data when steps is 0.")),
                "learning_rate": (
                    "FLOAT",
                    {**_from_preset("learning_rate", 1.0, "U-Net learning rate."), "step": 1e-5},
                ),
                "resolution": (
                    "INT",
                    {
                        "default": 512,
                        "min": 64,
                        "max": 2048,
                        "step": 64,
                        "tooltip": "Training resolution (SDXL: 1024).",
                    },
                ),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Images per step."}),
                "trigger_word": (
                    "STRING",
                    {"default": "", "tooltip": "Prepended to captions; shown on the WebUI card."},
                ),
            },
            "optional": {
                "advanced_yaml": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "Any other config keys as "
                        "YAML (see the README's config reference), e.g. `network_type: locon`.",
                    },
                ),
                "sample_prompt": (
                    "STRING",
                    {"default": "", "tooltip": "Rendered during training with a fixed seed."},
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def _config(self, ckpt_name: str, dataset: dict, preset: str, values: dict, advanced_yaml: str) -> dict:
        import folder_paths

        from ..lorascripts.config import config_from_dict
        from ..lorascripts.host.presets import merged_settings
        from ..lorascripts.host.safety import check_request_config

        dataset = checked_dataset(dataset)
        config = merged_settings(preset, values, advanced_yaml)
        config["base_model"] = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        config["train_data_dir"] = dataset["folder"]
        if dataset.get("metadata_path"):
            config["metadata_path"] = dataset["metadata_path"]
        tokenizer = tokenizer_folder()
        if tokenizer and "tokenizer_path" not in config:
            config["tokenizer_path"] = tokenizer
        # validate now (errors show in the dialog), and keep a request's paths inside ComfyUI's folders
        check_request_config(
            config_from_dict({**config, "output_dir": str(work_root())}),
            fixed={"base_model": config["base_model"], "train_data_dir": dataset["folder"]},
            read_roots=read_roots(),
            write_roots=[work_root()],
            extra_read=[Path(dataset["folder"]), *([Path(tokenizer)] if tokenizer else [])],
        )
        return config

    def train(
        self,
        ckpt_name: str,
        dataset: dict,
        lora_name: str,
        preset: str,
        rank: int,
        alpha: float,
        steps: int,
        epochs: int,
        learning_rate: float,
        resolution: int,
        batch_size: int,
        trigger_word: str,
        advanced_yaml: str = "",
        sample_prompt: str = "",
        unique_id: str | None = None,
    ) -> dict:
        import comfy.model_management as mm
        import comfy.utils
        from server import PromptServer

        from ..lorascripts.host.jobs import TrainingJob

        name = safe_name(lora_name)
        values: dict[str, Any] = {
            # 0 leaves the preset's value (None is dropped by merged_settings)
            "lora_rank": rank or None,
            "lora_alpha": alpha or None,
            "learning_rate": learning_rate or None,
            "resolution": resolution,
            "batch_size": batch_size,
            "epochs": epochs or None,
            "trigger_word": trigger_word,
            "log_every_n_steps": 1,
        }
        if steps:
            values["max_train_steps"] = steps
            values["save_steps"] = max(1, steps // 4)
        if sample_prompt.strip():
            values.update(
                sample_prompts=[sample_prompt.strip()], sample_every_n_steps=max(1, (steps or 100) // 4)
            )
        config = self._config(ckpt_name, dataset, preset, values, advanced_yaml)
        job = TrainingJob(config, work_root() / "runs" / name, loras_dir(), name)
        losses: list[tuple[int, float]] = []
        validation: list[tuple[int, float]] = []
        samples: list[str] = []
        bar = comfy.utils.ProgressBar(max(1, steps or 1))
        cancel = {"asked": False}

        def progress(value: int, total: int | None = None) -> None:
            try:  # ComfyUI's progress hook raises when the user pressed Cancel: turn that into a clean stop
                bar.update_absolute(value, total)
            except mm.InterruptProcessingException:
                cancel["asked"] = True

        def on_event(event: dict) -> None:
            kind = event.get("event")
            if kind == "started":
                progress(event.get("start_step", 0), event.get("total_steps"))
            elif kind == "step":
                losses.append((event["step"], event["loss"]))
                progress(event["step"], event["total_steps"])
            elif kind == "validation":
                validation.append((event["step"], event["loss"]))
            elif kind == "sample":
                samples[:] = event.get("paths", [])
                event = {**event, "images": [_view_ref(p) for p in samples]}
            PromptServer.instance.send_sync(EVENT, {"node": unique_id, **event})

        if not job.reusable():
            mm.unload_all_models()
            mm.soft_empty_cache()
        from ..lorascripts.errors import StopRequested

        try:
            result = job.run(
                on_event=on_event, should_cancel=lambda: cancel["asked"] or mm.processing_interrupted()
            )
        except StopRequested:
            mm.interrupt_current_processing(False)
            raise mm.InterruptProcessingException() from None  # ComfyUI's own "interrupted" outcome
        if result.reused:
            PromptServer.instance.send_sync(
                EVENT, {"node": unique_id, "event": "reused", "lora": str(result.lora_path)}
            )
        lora_file = result.lora_path.name
        return {
            "ui": {
                "lora_scripts_result": [
                    {
                        "lora": lora_file,
                        "reused": result.reused,
                        "losses": losses[-200:],
                        "validation": validation[-200:],
                    }
                ]
            },
            "result": (lora_file, _chart(losses, validation), _samples(samples)),
        }
