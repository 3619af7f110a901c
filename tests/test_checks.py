"""Dataset checks flag seeded problems with the right reason; the HTML review page shows every image and flag."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter

from lorascripts.data.captions import write_metadata
from lorascripts.data.checks import check_dataset
from lorascripts.data.report import write_html_report


def _picture(seed: int, size: int = 256) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(size), rng.randrange(size)
        r = rng.randrange(4, 40)
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + r, y + r), fill=colour)
    return image


@pytest.fixture()
def seeded(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        _picture(i).save(data / f"good{i}.png")
    _picture(0).filter(ImageFilter.GaussianBlur(6)).save(data / "blurred.png")
    _picture(1).save(data / "copy.jpg", quality=90)  # near-duplicate of good1
    _picture(5, size=64).save(data / "tiny.png")
    _picture(6).save(data / "trunc.png")
    (data / "trunc.png").write_bytes((data / "trunc.png").read_bytes()[:300])
    (data / "text.jpg").write_text("this is not a picture", encoding="utf-8")
    Image.new("RGB", (900, 200), (0, 0, 0)).save(data / "banner.png")
    captions = {f"good{i}.png": f"zk, a picture of shapes number {i}" for i in range(3)}
    captions.update(
        {
            "blurred.png": "zk, blurred shapes",
            "copy.jpg": "zk, shapes again",
            "tiny.png": "",
            "banner.png": "a beautiful Zk banner",
            "trunc.png": "zk, broken",
            "text.jpg": "zk, text",
        }
    )
    write_metadata(data / "metadata.csv", captions)
    return data


def test_seeded_problems_are_flagged_with_the_right_reason(seeded: Path) -> None:
    report = check_dataset(seeded, resolution=128, trigger_word="zk")
    codes = {f.file: set() for f in report.flags}
    for f in report.flags:
        codes[f.file].add(f.code)
    pairs = {frozenset((f.file, f.message.split()[-1])) for f in report.flags if f.code == "duplicate"}
    assert pairs == {frozenset(("good1.png", "copy.jpg")), frozenset(("good0.png", "blurred.png"))}
    assert not any(c - {"duplicate"} for f, c in codes.items() if f.startswith("good")), report.summary()
    assert "blurry" in codes["blurred.png"] and "blurry" not in codes.get("copy.jpg", set())
    assert codes["tiny.png"] >= {"too_small", "empty_caption"}
    assert codes["trunc.png"] == {"unreadable"} and codes["text.jpg"] == {"unreadable"}
    assert codes["banner.png"] == {"aspect_ratio", "generic_words", "blank"}
    assert {f.severity for f in report.flags if f.code == "unreadable"} == {"error"}
    long = check_dataset(seeded, resolution=128, trigger_word="zkstyle")
    assert any(f.code == "no_trigger" for f in long.flags)


def test_trigger_spelling_and_long_captions(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    for i in range(2):
        _picture(10 + i).save(data / f"p{i}.png")
    write_metadata(data / "metadata.csv", {"p0.png": "zk style, a dog", "p1.png": "zkstyle, " + "word " * 90})
    report = check_dataset(data, resolution=64, trigger_word="zkstyle")
    codes = {(f.file, f.code) for f in report.flags}
    assert ("p0.png", "trigger_spelling") in codes and ("p1.png", "long_caption") in codes


def test_html_report_shows_every_image_and_flag(seeded: Path, tmp_path: Path) -> None:
    report = check_dataset(seeded, resolution=128, trigger_word="zk")
    page = write_html_report(report, tmp_path / "report.html")
    assert shutil.which("chromium"), "the review-page test needs Chromium: `bash dev.sh test` installs it"
    dom = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    readable = len([i for i in report.images if i.file not in ("trunc.png", "text.jpg")])
    assert f"{readable} of {readable} thumbnails shown" in dom
    rows = re.findall(r'<tr data-file="([^"]+)"', dom)
    assert sorted(rows) == sorted(i.file for i in report.images)
    for flag in report.flags:
        assert f'data-code="{flag.code}"' in dom
