"""The example workflows shipped in example_workflows/ (ComfyUI's template folder), defined once in API form.

`python tests/example_prompts.py --write` (with a ComfyUI running, see comfy_host) regenerates the UI files; a
test checks that the committed files still match these definitions and the live node definitions.
"""

from __future__ import annotations

CKPT = "v1-5-pruned-emaonly.safetensors"


def _ksampler(
    model: list,
    positive: list,
    negative: list,
    latent: list,
    steps: int,
    cfg: float,
    scheduler: str,
    sampler: str = "euler",
) -> dict[str, object]:
    inputs = {"model": model, "positive": positive, "negative": negative, "latent_image": latent, "seed": 42}
    inputs.update(steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler, denoise=1.0)
    return {"class_type": "KSampler", "inputs": inputs}


def _sampler(
    model: list, clip: list, vae: list, text: str | list, prefix: str, first: int
) -> dict[str, dict]:
    n = [str(first + i) for i in range(6)]
    return {
        n[0]: {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}},
        n[1]: {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": clip}},
        n[2]: {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        n[3]: _ksampler(model, [n[0], 0], [n[1], 0], [n[2], 0], steps=25, cfg=7.0, scheduler="normal"),
        n[4]: {"class_type": "VAEDecode", "inputs": {"samples": [n[3], 0], "vae": vae}},
        n[5]: {"class_type": "SaveImage", "inputs": {"images": [n[4], 0], "filename_prefix": prefix}},
    }


def _train(ckpt: str, dataset: list, name: str, resolution: int, **more: object) -> dict[str, object]:
    """A Train LoRA node of the examples: the style preset, 1000 steps, the trigger word "my style"."""
    return {
        "class_type": "LoraScriptsTrainLoRA",
        "inputs": {
            "ckpt_name": ckpt,
            "dataset": dataset,
            "lora_name": name,
            "preset": "style",
            "rank": 0,  # 0: the preset's
            "alpha": 0.0,
            "steps": 1000,
            "epochs": 0,
            "learning_rate": 0.0,
            "resolution": resolution,  # 0: the family's
            "batch_size": 1,
            "trigger_word": "my style",
            "advanced_yaml": "",
            "sample_prompt": "my style, a house by a river",
            **more,
        },
    }


def _load_lora(model: list, clip: list, name: str, trained: list, strength: float) -> dict[str, object]:
    """Load LoRA applying what Train LoRA (`trained`, its lora_name output) just wrote."""
    inputs = {"model": model, "clip": clip, "lora_name": f"{name}.safetensors", "trained_lora": trained}
    inputs.update(strength_model=strength, strength_clip=strength)
    return {"class_type": "LoraScriptsLoadLoRA", "inputs": inputs}


def train_style_and_use() -> dict[str, dict]:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "LoraScriptsLoadDataset", "inputs": {"folder": "my_style"}},
        "3": {
            "class_type": "LoraScriptsAutoCaption",
            "inputs": {
                "dataset": ["2", 0],
                "captioner": "blip",
                "trigger_word": "my style",
                "mode": "skip_existing",
                "model": "",
                "batch_size": 4,
            },
        },
        "4": _train(CKPT, ["3", 0], "my_style", 512),
        "5": _load_lora(["1", 0], ["1", 1], "my_style", ["4", 0], strength=0.8),
    }
    prompt.update(
        _sampler(["5", 0], ["5", 1], ["1", 2], "my style, a stone bridge over a canal", "my_style", 6)
    )
    return prompt


def caption_folder() -> dict[str, dict]:
    return {
        "1": {"class_type": "LoraScriptsLoadDataset", "inputs": {"folder": "my_dataset"}},
        "2": {
            "class_type": "LoraScriptsAutoCaption",
            "inputs": {
                "dataset": ["1", 0],
                "captioner": "florence2",
                "trigger_word": "",
                "mode": "skip_existing",
                "model": "",
                "batch_size": 4,
            },
        },
    }


def lora_prompt_tags() -> dict[str, dict]:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {
            "class_type": "LoraScriptsPromptTags",
            "inputs": {
                "model": ["1", 0],
                "clip": ["1", 1],
                "text": "a stone bridge over a canal <lora:my_style:0.7>",
            },
        },
    }
    prompt.update(_sampler(["2", 0], ["2", 1], ["1", 2], ["2", 2], "lora_tags", 3))
    return prompt


FLUX_MODEL = "flux1-dev.safetensors"
FLUX_PARTS = {
    "vae": "ae.safetensors",
    "text_encoder": "clip_l.safetensors",
    "text_encoder_2": "t5xxl_fp16.safetensors",
}


def train_flux_style_and_use() -> dict[str, dict]:
    """Train LoRA on a FLUX.1 transformer and the part files it is used with, then sample with it. The trained
    LoRA reaches the model through Load LoRA's `trained_lora` link: ComfyUI's own LoraLoader / LoraLoaderModelOnly
    take the name only from their list, which does not hold the file before training (Load LoRA applies it with
    ComfyUI's LoraLoader code and reports keys that did not apply)."""
    text = "my style, a stone bridge over a canal"
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": FLUX_MODEL, "weight_dtype": "default"}},
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": FLUX_PARTS["text_encoder"],
                "clip_name2": FLUX_PARTS["text_encoder_2"],
                "type": "flux",
            },
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": FLUX_PARTS["vae"]}},
        "4": {"class_type": "LoraScriptsLoadDataset", "inputs": {"folder": "my_style"}},
        # memory_preset auto: the first published recipe that fits this GPU
        "5": _train(FLUX_MODEL, ["4", 0], "my_flux_style", 0, memory_preset="auto", **FLUX_PARTS),
        "6": _load_lora(["1", 0], ["2", 0], "my_flux_style", ["5", 0], strength=1.0),
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["6", 1]}},
        "8": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["7", 0], "guidance": 3.5}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["6", 1]}},
        "10": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 1024, "height": 1024, "batch_size": 1},
        },
        # cfg 1: FLUX.1 dev is guidance-distilled, its guidance is FluxGuidance's
        "11": _ksampler(["6", 0], ["8", 0], ["9", 0], ["10", 0], steps=20, cfg=1.0, scheduler="simple"),
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["3", 0]}},
        "13": {
            "class_type": "SaveImage",
            "inputs": {"images": ["12", 0], "filename_prefix": "my_flux_style"},
        },
    }
    return prompt


ZIMAGE_MODEL = "z_image_turbo_bf16.safetensors"
ZIMAGE_PARTS = {"vae": "ae.safetensors", "text_encoder": "qwen_3_4b.safetensors"}


def train_zimage_style_and_use() -> dict[str, dict]:
    """Train LoRA on a Z-Image transformer with its VAE and Qwen3-4B files, then sample as ComfyUI's own Z-Image
    Turbo template does (comfyui_workflow_templates' image_z_image_turbo): CLIPLoader type `lumina2` (ComfyUI
    reads Z-Image's Qwen3-4B by its shapes; the type only has to be one that leaves that to the file),
    ModelSamplingAuraFlow shift 3, a zeroed negative, KSampler res_multistep / simple, 9 steps (Turbo's 8
    transformer passes), cfg 1 (Turbo is distilled: no CFG). The trained LoRA reaches the model through Load
    LoRA's `trained_lora` link, as in the FLUX example."""
    text = "my style, a stone bridge over a canal"
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": ZIMAGE_MODEL, "weight_dtype": "default"}},
        "2": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": ZIMAGE_PARTS["text_encoder"], "type": "lumina2", "device": "default"},
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": ZIMAGE_PARTS["vae"]}},
        "4": {"class_type": "LoraScriptsLoadDataset", "inputs": {"folder": "my_style"}},
        "5": _train(ZIMAGE_MODEL, ["4", 0], "my_zimage_style", 0, memory_preset="auto", **ZIMAGE_PARTS),
        "6": _load_lora(["1", 0], ["2", 0], "my_zimage_style", ["5", 0], strength=1.0),
        "7": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["6", 0], "shift": 3.0}},
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["6", 1]}},
        "9": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["8", 0]}},
        "10": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 1024, "height": 1024, "batch_size": 1},
        },
        "11": _ksampler(
            ["7", 0],
            ["8", 0],
            ["9", 0],
            ["10", 0],
            steps=9,
            cfg=1.0,
            scheduler="simple",
            sampler="res_multistep",
        ),
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["3", 0]}},
        "13": {
            "class_type": "SaveImage",
            "inputs": {"images": ["12", 0], "filename_prefix": "my_zimage_style"},
        },
    }
    return prompt


EXAMPLES = {
    "lora-scripts train a style and use it": train_style_and_use,
    "lora-scripts train a FLUX style and use it": train_flux_style_and_use,
    "lora-scripts train a Z-Image style and use it": train_zimage_style_and_use,
    "lora-scripts caption a folder": caption_folder,
    "lora-scripts apply LoRAs from prompt tags": lora_prompt_tags,
}


if __name__ == "__main__":
    import json
    import sys
    import tempfile
    from pathlib import Path

    from comfy_host import REPO, ComfyServer
    from workflow_format import to_ui

    if "--write" in sys.argv:
        server = ComfyServer(Path(tempfile.mkdtemp()))
        try:
            info = server.get("/object_info")
            for title, build in EXAMPLES.items():
                path = REPO / "example_workflows" / f"{title}.json"
                path.parent.mkdir(exist_ok=True)
                path.write_text(json.dumps(to_ui(build(), info), indent=1) + "\n", encoding="utf-8")
                print(f"wrote {path}")  # noqa: T201
        finally:
            server.stop()
