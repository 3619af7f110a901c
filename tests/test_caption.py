"""Auto-captioning on tiny real models: one caption per image, modes, rules, resume, CSV round trips, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from tiny_captioners import build_tiny_blip, build_tiny_florence, build_tiny_wd14

from lorascripts.caption.base import create_captioner
from lorascripts.caption.labeler import auto_label
from lorascripts.caption.postprocess import CaptionRules, finish_caption
from lorascripts.data.captions import read_metadata, write_metadata
from lorascripts.errors import ModelError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> Path:
    return build_tiny_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def wd14_dir(tmp_path_factory) -> Path:
    return build_tiny_wd14(tmp_path_factory.mktemp("wd14"))[0]


def _images(folder: Path, n: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 240), (10, 10, 10)]
    for i in range(n):
        Image.new("RGB", (48, 48), colours[i % len(colours)]).save(folder / f"im{i}.png")
    return folder


def test_blip_one_caption_per_image_with_trigger(blip_dir: Path, tmp_path: Path) -> None:
    data = _images(tmp_path / "d")
    (data / "notes.png").write_bytes(b"not an image at all")
    captioner = create_captioner(
        "blip", str(blip_dir), device="cpu", batch_size=2, max_new_tokens=8, num_beams=1
    )
    result = auto_label(data, captioner, rules=CaptionRules(trigger_word="zk style"), show_progress=False)
    rows = read_metadata(data / "metadata.csv")
    assert sorted(rows) == [f"im{i}.png" for i in range(5)]
    assert all(c.startswith("zk style, ") and len(c) > len("zk style, ") for c in rows.values())
    assert list(result.failed) == ["notes.png"] and result.captioned == 5
    assert not (data / "metadata.csv.partial").exists()


def test_florence2_detailed_captions(tmp_path: Path) -> None:
    model = build_tiny_florence(tmp_path / "florence")
    data = _images(tmp_path / "d", n=3)
    captioner = create_captioner(
        "florence2", str(model), device="cpu", batch_size=2, task="caption", max_new_tokens=6, num_beams=1
    )
    result = auto_label(data, captioner, rules=CaptionRules(prefix="photo"), show_progress=False)
    assert len(result.captions) == 3 and all(
        c.startswith("photo, ") and len(c) > 7 for c in result.captions.values()
    )
    with pytest.raises(Exception, match="unknown Florence-2 task"):
        create_captioner("florence2", str(model), device="cpu", task="ocr")


def test_wd14_tags_thresholds_and_formatting(wd14_dir: Path, tmp_path: Path) -> None:
    tagger = create_captioner("wd14", str(wd14_dir), include_rating=True, exclude_tags=("green_theme",))
    red, green = Image.new("RGB", (64, 64), (250, 0, 0)), Image.new("RGB", (64, 64), (0, 250, 0))
    tags = tagger.caption([red, green])
    assert tags[0] == "rating:general, red theme"  # underscores replaced, rating first
    assert "green theme" not in tags[1]  # excluded
    low = create_captioner("wd14", str(wd14_dir), general_threshold=0.0001)
    assert "^_^" in low.caption([red])[0]  # kaomoji keep their underscore


def test_modes_and_sidecars(wd14_dir: Path, tmp_path: Path) -> None:
    data = _images(tmp_path / "d", n=3)
    write_metadata(data / "metadata.csv", {"im0.png": "hand written", "im1.png": ""})
    tagger = create_captioner("wd14", str(wd14_dir))
    auto_label(data, tagger, mode="skip_existing", show_progress=False)
    rows = read_metadata(data / "metadata.csv")
    assert rows["im0.png"] == "hand written" and rows["im1.png"] and rows["im2.png"]
    auto_label(data, tagger, mode="append", show_progress=False)
    assert read_metadata(data / "metadata.csv")["im0.png"].startswith("hand written, ")
    before = read_metadata(data / "metadata.csv")
    auto_label(data, tagger, mode="overwrite", fmt="txt", show_progress=False)
    fresh = finish_caption(tagger.caption([Image.open(data / "im0.png").convert("RGB")])[0], CaptionRules())
    assert (data / "im0.txt").read_text(encoding="utf-8") == fresh and "hand written" not in fresh
    assert read_metadata(data / "metadata.csv") == before  # txt format leaves metadata.csv alone


def test_resume_keeps_finished_rows(wd14_dir: Path, tmp_path: Path) -> None:
    data = _images(tmp_path / "d", n=4)
    partial = data / "metadata.csv.partial"
    partial.write_text(
        '{"file": "im0.png", "caption": "from the first run"}\n{"file": "im1.png", "cap', encoding="utf-8"
    )
    tagger = create_captioner("wd14", str(wd14_dir))
    result = auto_label(data, tagger, show_progress=False)
    rows = read_metadata(data / "metadata.csv")
    assert rows["im0.png"] == "from the first run" and len(rows) == 4
    assert result.resumed == 1 and result.captioned == 3 and not partial.exists()


def test_rules() -> None:
    rules = CaptionRules(
        trigger_word="zk",
        prefix="photo",
        suffix="film grain",
        replace=[("1girl", "a woman"), ("/\\s+/", " ")],
    )
    out = finish_caption("1girl,   smiling, photo", rules)
    assert out == "zk, photo, a woman, smiling, film grain"
    assert finish_caption("a, b, c, d", CaptionRules(max_length=5)) == "a, b"


def test_csv_round_trip(tmp_path: Path) -> None:
    rows = {"a.png": 'comma, "quotes"\nand a newline', "ü/b.png": "日本語 caption", "c.png": ""}
    write_metadata(tmp_path / "m.csv", rows)
    assert read_metadata(tmp_path / "m.csv") == rows
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefffile_name,caption\r\nx.png,hello\r\n".encode())
    assert read_metadata(bom) == {"x.png": "hello"}


def test_remote_code_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "custom"
    model.mkdir()
    (model / "config.json").write_text('{"auto_map": {"AutoModel": "modeling_x.X"}}', encoding="utf-8")
    with pytest.raises(ModelError, match="allow-remote-code"):
        create_captioner("blip", str(model), device="cpu")


def test_command_line(wd14_dir: Path, tmp_path: Path) -> None:
    data = _images(tmp_path / "d", n=2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "auto_label.py"),
            "--input",
            str(data),
            "--output",
            str(data / "metadata.csv"),
            "--captioner",
            "wd14",
            "--model",
            str(wd14_dir),
            "--trigger",
            "zk",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "captioned 2" in done.stdout
    assert all(c.startswith("zk") for c in read_metadata(data / "metadata.csv").values())
    missing = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "auto_label.py"),
            "--input",
            str(tmp_path / "nope"),
            "--captioner",
            "wd14",
            "--model",
            str(wd14_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert missing.returncode == 3 and "not a folder" in missing.stderr
