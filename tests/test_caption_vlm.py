"""Vision-language captioners (Qwen2-VL family, JoyCaption/LLaVA) on tiny models built from configs with local
tokenizers and processors, through the same code as the real ones; and the caption problems they cause."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

from PIL import Image, ImageDraw
from tiny_captioners import build_tiny_llava

from lorascripts.caption.base import create_captioner
from lorascripts.caption.labeler import auto_label
from lorascripts.caption.postprocess import CaptionRules, tidy_sentences
from lorascripts.caption.prompts import PRESETS
from lorascripts.data.captions import read_metadata, write_metadata
from lorascripts.data.checks import check_dataset

REPO = Path(__file__).resolve().parent.parent


def _images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(n)
    for i in range(n):
        image = Image.new("RGB", (40 + 8 * i, 48), (240, 240, 235))
        ImageDraw.Draw(image).ellipse((8, 8, 32, 40), fill=tuple(rng.randrange(256) for _ in range(3)))
        image.save(folder / f"im{i}.png")
    return folder


def test_joycaption_llava_prompts_batches_and_keeps_your_captions(tmp_path: Path) -> None:
    model = build_tiny_llava(tmp_path / "joy")
    data = _images(tmp_path / "d", 3)
    (data / "im0.txt").write_text("my own words", encoding="utf-8")
    captioner = create_captioner(
        "joycaption", str(model), device="cpu", batch_size=2, preset="short", max_new_tokens=8
    )
    # JoyCaption's template reads only text: the image placeholder goes in front of the preset's instruction
    assert captioner.text.count("<image>") == 1 and f"<image>\n{PRESETS['short']}" in captioner.text
    rules = CaptionRules(trigger_word="zkstyle", max_length=60)
    result = auto_label(data, captioner, mode="skip_existing", rules=rules, show_progress=False)
    rows = read_metadata(data / "metadata.csv")
    assert result.kept == 1 and result.captioned == 2 and rows["im0.png"] == "my own words"
    assert (data / "im0.txt").read_text(encoding="utf-8") == "my own words", "the user's sidecar is untouched"
    for name in ("im1.png", "im2.png"):
        assert rows[name].startswith("zkstyle, ") and len(rows[name]) > len("zkstyle, ")
        assert len(rows[name]) <= 60 and "\n" not in rows[name] and "<|eot_id|>" not in rows[name]
        assert "Write a one-sentence caption" not in rows[name], "only the answer is decoded"


def test_qwen2_vl_through_the_command_line(tmp_path: Path) -> None:
    """Run where torchvision is installed, as in ComfyUI and the WebUI (transformers' Qwen-VL processors import
    it): the ComfyUI test venv."""
    from comfy_host import comfy_python

    data = _images(tmp_path / "d", 3)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path; from tiny_captioners import build_tiny_qwen2_vl;"
        "from lorascripts.caption.cli import main;"
        "model = build_tiny_qwen2_vl(Path(sys.argv[2]));"
        "sys.exit(main(['--input', sys.argv[3], '--captioner', 'qwen-vl', '--model', str(model), '--preset',"
        " 'tags', '--trigger', 'zk', '--batch-size', '2', '--max-new-tokens', '6', '--device', 'cpu']))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [str(comfy_python()), "-c", script, str(REPO / "tests"), str(tmp_path / "qwen"), str(data)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "captioned 3" in done.stdout
    rows = read_metadata(data / "metadata.csv")
    assert sorted(rows) == ["im0.png", "im1.png", "im2.png"]
    assert all(c.startswith("zk, ") and len(c) > 4 and "\n" not in c for c in rows.values())


def test_vlm_answers_are_tidied() -> None:
    answer = "The image shows a red cat on a mat.\nIt sleeps. It sleeps. Behind it the"
    assert tidy_sentences(answer, cut=True) == "A red cat on a mat. It sleeps."
    assert tidy_sentences(answer) == "A red cat on a mat. It sleeps. Behind it the"
    assert tidy_sentences("1girl,\nsolo, red hair\n", tags=True) == "1girl, solo, red hair"


def test_check_dataset_flags_what_vlms_write_for_the_family_in_use(tmp_path: Path) -> None:
    data = _images(tmp_path / "d", 3)
    long = "zk, " + " ".join(f"word{i}" for i in range(90))
    write_metadata(
        data / "metadata.csv",
        {
            "im0.png": "zk, This picture depicts a woman in a garden.",
            "im1.png": "zk, A dog runs. It is happy. It is happy.",
            "im2.png": long,
        },
    )

    def codes(family: str) -> dict[str, set[str]]:
        report = check_dataset(data, resolution=32, trigger_word="zk", family=family)
        return {f: {x.code for x in report.flags if x.file == f} for f in ("im0.png", "im1.png", "im2.png")}

    sd = codes("sd1")
    assert (
        "hedging" in sd["im0.png"]
        and "repeated_sentence" in sd["im1.png"]
        and "long_caption" in sd["im2.png"]
    )
    assert "hedging" not in sd["im1.png"] and "repeated_sentence" not in sd["im0.png"]
    assert "long_caption" not in codes("flux1")["im2.png"], "T5 reads 512 tokens"
