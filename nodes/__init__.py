"""lora-scripts nodes for ComfyUI (ids prefixed `LoraScripts`, category `lora-scripts`)."""

from .dataset_nodes import AutoCaption, LoadDataset
from .llm_nodes import GenerateText
from .lora_nodes import LoadLoRA, LoraPromptTags
from .toolbox_nodes import InspectLoRA, MergeLoRAIntoCheckpoint, MergeLoRAs, ResizeLoRA
from .train_node import TrainLoRA

NODE_CLASS_MAPPINGS = {
    "LoraScriptsLoadDataset": LoadDataset,
    "LoraScriptsAutoCaption": AutoCaption,
    "LoraScriptsTrainLoRA": TrainLoRA,
    "LoraScriptsLoadLoRA": LoadLoRA,
    "LoraScriptsPromptTags": LoraPromptTags,
    "LoraScriptsInspectLoRA": InspectLoRA,
    "LoraScriptsMergeLoRAs": MergeLoRAs,
    "LoraScriptsResizeLoRA": ResizeLoRA,
    "LoraScriptsMergeIntoCheckpoint": MergeLoRAIntoCheckpoint,
    "LoraScriptsGenerateText": GenerateText,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoraScriptsLoadDataset": "Load Dataset (lora-scripts)",
    "LoraScriptsAutoCaption": "Auto Caption (lora-scripts)",
    "LoraScriptsTrainLoRA": "Train LoRA (lora-scripts)",
    "LoraScriptsLoadLoRA": "Load LoRA (lora-scripts)",
    "LoraScriptsPromptTags": "LoRA Prompt Tags (lora-scripts)",
    "LoraScriptsInspectLoRA": "Inspect / Self-test LoRA (lora-scripts)",
    "LoraScriptsMergeLoRAs": "Merge LoRAs (lora-scripts)",
    "LoraScriptsResizeLoRA": "Resize LoRA (lora-scripts)",
    "LoraScriptsMergeIntoCheckpoint": "Merge LoRA into Checkpoint (lora-scripts)",
    "LoraScriptsGenerateText": "Generate Text with LoRA (lora-scripts)",
}

from . import routes  # noqa: E402,F401 - registers the caption-editor HTTP route
