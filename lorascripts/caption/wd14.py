"""WD14 tagger (SmilingWolf's ONNX models): booru tags with thresholds, through onnxruntime.

A model is a folder (or Hugging Face repo) with `model.onnx` (input NHWC float32 BGR 0-255, square) and
`selected_tags.csv` (`tag_id,name,category,count`; category 9 = rating, 4 = character, 0 = general).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ModelError
from .loading import ModelSource

logger = logging.getLogger(__name__)
KAOMOJI = {
    "0_0",
    "(o)_(o)",
    "+_+",
    "+_-",
    "._.",
    "<o>_<o>",
    "<|>_<|>",
    "=_=",
    ">_<",
    "3_3",
    "6_9",
    ">_o",
    "@_@",
    "^_^",
    "o_o",
    "u_u",
    "x_x",
    "|_|",
    "||_||",
}
RATING, GENERAL, CHARACTER = 9, 0, 4


@dataclass(frozen=True)
class Tag:
    name: str
    category: int


def _files(model: str) -> tuple[Path, Path]:
    folder = Path(model)
    if folder.is_dir():
        onnx, tags = folder / "model.onnx", folder / "selected_tags.csv"
    else:
        from huggingface_hub import hf_hub_download

        try:
            onnx = Path(hf_hub_download(model, "model.onnx"))
            tags = Path(hf_hub_download(model, "selected_tags.csv"))
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types
            raise ModelError(f"cannot download WD14 model {model}: {exc}") from None
    for path in (onnx, tags):
        if not path.is_file():
            raise ModelError(
                f"WD14 model {model} lacks {path.name} (needs model.onnx and selected_tags.csv)."
            )
    return onnx, tags


def read_tags(path: Path) -> list[Tag]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [Tag(row["name"], int(row["category"])) for row in csv.DictReader(fh)]


class WD14Tagger:
    """Tags above thresholds, characters first, optional rating, underscores replaced (kaomoji kept)."""

    name = "wd14"

    def __init__(
        self,
        source: ModelSource,
        *,
        general_threshold: float = 0.35,
        character_threshold: float = 0.85,
        replace_underscores: bool = True,
        exclude_tags: tuple[str, ...] = (),
        include_rating: bool = False,
        max_tags: int | None = None,
    ) -> None:
        import onnxruntime as ort

        onnx, tags = _files(source.model)
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if source.device == "cuda"
            else ["CPUExecutionProvider"]
        )
        available = set(ort.get_available_providers())
        self.session = ort.InferenceSession(str(onnx), providers=[p for p in providers if p in available])
        self.input = self.session.get_inputs()[0]
        self.size = int(self.input.shape[1]) if isinstance(self.input.shape[1], int) else 448
        self.tags = read_tags(tags)
        self.batch_size = source.batch_size
        self.general_threshold, self.character_threshold = general_threshold, character_threshold
        self.replace_underscores = replace_underscores
        self.exclude = {t.strip().replace(" ", "_") for t in exclude_tags}
        self.include_rating, self.max_tags = include_rating, max_tags

    def _prepare(self, image: Image.Image) -> np.ndarray:
        """Pad to a white square, resize, RGB -> BGR float32 (the models' training input)."""
        image = image.convert("RGB")
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        canvas = canvas.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.asarray(canvas, dtype=np.float32)[:, :, ::-1]

    def _format(self, name: str) -> str:
        if self.replace_underscores and name not in KAOMOJI:
            return name.replace("_", " ")
        return name

    def tags_for(self, probs: np.ndarray) -> list[str]:
        chosen: list[tuple[float, Tag]] = []
        rating = None
        for p, tag in zip(probs.tolist(), self.tags):
            if tag.name in self.exclude:
                continue
            if tag.category == RATING:
                if rating is None or p > rating[0]:
                    rating = (p, tag)
            elif p >= (self.character_threshold if tag.category == CHARACTER else self.general_threshold):
                chosen.append((p, tag))
        chosen.sort(key=lambda x: (x[1].category != CHARACTER, -x[0]))
        names = [self._format(t.name) for _, t in chosen][: self.max_tags]
        if self.include_rating and rating is not None:
            names.insert(0, self._format(rating[1].name))
        return names

    def caption(self, images: list[Image.Image]) -> list[str]:
        batch = np.stack([self._prepare(img) for img in images])
        probs = self.session.run(None, {self.input.name: batch})[0]
        return [", ".join(self.tags_for(row)) for row in probs]
