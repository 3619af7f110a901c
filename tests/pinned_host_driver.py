"""Run by a host-pinned Python (tests/test_host_envs.py): the training a host door starts, from the host's own
process, reported as one JSON line. `webui`: the tab's form and session around the stand-in WebUI modules (the
WebUI's root and our extension folder on sys.path, as when the WebUI runs our scripts/); `comfy`: the
TrainingJob the Train LoRA node runs. Also reports which engine libraries the host process itself imported.

    python pinned_host_driver.py webui|comfy ROOT CHECKPOINT TOKENIZER DATASET NAME
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENGINE_ONLY = {"diffusers", "peft", "accelerate", "lycoris", "transformers", "tensorboard", "onnxruntime"}
SMALL = (
    "resolution: 32\nbucket_reso_steps: 8\nmin_bucket_reso: 16\nmixed_precision: 'no'\ndataset_checks: warn\n"
)


def webui(root: Path, checkpoint: str, data: str, name: str) -> dict:
    sys.path[:0] = [str(HERE / "webui_standin"), str(HERE.parent)]
    import networks  # noqa: F401 - the built-in Lora extension loads first
    from modules import sd_models

    from lora_scripts_webui.actions import TrainForm, build_config
    from lora_scripts_webui.session import TrainingSession

    sd_models.list_models()
    title = next(t for t in sd_models.checkpoints_list if t.startswith(checkpoint))
    form = TrainForm(
        dataset=data,
        checkpoint=title,
        lora_name=name,
        rank=4,
        steps=2,
        trigger_word="zk",
        advanced_yaml=SMALL,
    )
    session = TrainingSession()
    session.start(build_config(form), name)
    snap = session.wait(900)
    return {"state": snap.state, "message": snap.message}


def comfy(root: Path, checkpoint: str, tokenizer: str, data: str, name: str) -> dict:
    import yaml

    sys.path[:0] = [str(HERE.parent)]
    from lorascripts.host.jobs import TrainingJob

    config = {
        **yaml.safe_load(SMALL),
        "base_model": checkpoint,
        "tokenizer_path": tokenizer,
        "train_data_dir": data,
        "max_train_steps": 2,
        "lora_rank": 4,
        "trigger_word": "zk",
    }
    result = TrainingJob(config, root / "work", root / "loras", name).run()
    compat = [e for e in result.events if e.get("event") == "self_test"]
    return {"state": "finished", "lora": str(result.lora_path), "compat": compat[-1] if compat else None}


def main() -> None:
    kind, root, checkpoint, tokenizer, data, name = sys.argv[1:7]
    if kind == "webui":
        outcome = webui(Path(root), checkpoint, data, name)
    else:
        outcome = comfy(Path(root), checkpoint, tokenizer, data, name)
    from lorascripts.host.engine_env import engine_python

    outcome["engine_python"] = engine_python()
    outcome["host_python"] = sys.executable
    outcome["host_imported"] = sorted({m.split(".")[0] for m in sys.modules} & ENGINE_ONLY)
    print("RESULT " + json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
