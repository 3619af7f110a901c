"""lora-scripts nodes for ComfyUI on its V3 node API (ids prefixed `LoraScripts`, category `lora-scripts`)."""

from comfy_api.latest import ComfyExtension, io

from .dataset_nodes import AutoCaption, LoadDataset
from .llm_nodes import GenerateText
from .lora_nodes import LoadLoRA, LoraPromptTags
from .toolbox_nodes import InspectLoRA, MergeLoRAIntoCheckpoint, MergeLoRAs, ResizeLoRA
from .train_node import TrainLoRA

NODES: list[type[io.ComfyNode]] = [
    LoadDataset,
    AutoCaption,
    TrainLoRA,
    LoadLoRA,
    LoraPromptTags,
    InspectLoRA,
    MergeLoRAs,
    ResizeLoRA,
    MergeLoRAIntoCheckpoint,
    GenerateText,
]


class LoraScriptsExtension(ComfyExtension):
    """What ComfyUI loads from this pack (`comfy_entrypoint` in the repository root)."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


from . import routes  # noqa: E402,F401 - registers the caption-editor HTTP route
