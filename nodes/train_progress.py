"""A training job seen from ComfyUI: its progress bar, Cancel, the live events for the front end (js/), and the
loss chart and samples the Train LoRA node returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import comfy.model_management as mm
import comfy.utils
import folder_paths
from server import PromptServer

from ..lorascripts.errors import StopRequested
from ..lorascripts.host.jobs import JobResult, TrainingJob

EVENT = "lora_scripts.progress"


def _view_ref(path: str) -> dict[str, str]:
    """How ComfyUI's /view endpoint addresses a file in the output folder."""
    rel = Path(path).resolve().relative_to(Path(folder_paths.get_output_directory()).resolve())
    return {"filename": rel.name, "subfolder": rel.parent.as_posix(), "type": "output"}


class TrainProgress:
    """Follows one job for one node: ComfyUI's progress bar, websocket events, Cancel as a clean stop."""

    def __init__(self, node_id: str | None, expected_steps: int) -> None:
        self.node_id = node_id
        self.losses: list[tuple[int, float]] = []
        self.validation: list[tuple[int, float]] = []
        self.samples: list[str] = []
        self.bar = comfy.utils.ProgressBar(max(1, expected_steps))
        self.cancel_asked = False

    def _progress(self, value: int, total: int | None = None) -> None:
        try:  # ComfyUI's progress hook raises when the user pressed Cancel: turn that into a clean stop
            self.bar.update_absolute(value, total)
        except mm.InterruptProcessingException:
            self.cancel_asked = True

    def _send(self, event: dict[str, Any]) -> None:
        PromptServer.instance.send_sync(EVENT, {"node": self.node_id, **event})

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "started":
            self._progress(event.get("start_step", 0), event.get("total_steps"))
        elif kind == "step":
            self.losses.append((event["step"], event["loss"]))
            self._progress(event["step"], event["total_steps"])
        elif kind == "validation":
            self.validation.append((event["step"], event["loss"]))
        elif kind == "sample":
            self.samples[:] = event.get("paths", [])
            event = {**event, "images": [_view_ref(p) for p in self.samples]}
        self._send(event)

    def run(self, job: TrainingJob) -> tuple[JobResult, TrainProgress]:
        """Free ComfyUI's models (unless the finished LoRA is reused), train, and report; Cancel ends as
        ComfyUI's own "interrupted" outcome with a checkpoint kept."""
        if not job.reusable():
            mm.unload_all_models()
            mm.soft_empty_cache()
        try:
            result = job.run(
                on_event=self.on_event, should_cancel=lambda: self.cancel_asked or mm.processing_interrupted()
            )
        except StopRequested:
            mm.interrupt_current_processing(False)
            raise mm.InterruptProcessingException() from None
        if result.reused:
            self._send({"event": "reused", "lora": str(result.lora_path)})
        return result, self

    def recent(self) -> dict[str, list[tuple[int, float]]]:
        """The last points of both curves, for the chart the front end draws on the node."""
        return {"losses": self.losses[-200:], "validation": self.validation[-200:]}

    def chart(self) -> Any:
        """The loss chart (training and validation loss) as an IMAGE (1, H, W, 3)."""
        import numpy as np
        import torch

        from ..lorascripts.host.charts import loss_chart

        chart = loss_chart(self.losses, validation=self.validation)
        return torch.from_numpy(np.asarray(chart, dtype=np.float32) / 255.0)[None]

    def sample_images(self) -> Any:
        """The latest samples as an IMAGE batch (a black 64x64 image when there are none)."""
        import numpy as np
        import torch
        from PIL import Image

        images = [
            np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
            for p in self.samples
            if Path(p).is_file()
        ]
        if not images:
            return torch.zeros(1, 64, 64, 3)
        shape = images[0].shape
        return torch.from_numpy(np.stack([i for i in images if i.shape == shape]))
