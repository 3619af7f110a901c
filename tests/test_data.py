"""Dataset reading: image modes, captions from every source, repeat folders, buckets, caption processing."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from helpers_train import make_dataset
from PIL import Image

from lorascripts.data.buckets import BucketSet
from lorascripts.data.caption_proc import process_caption
from lorascripts.data.images import load_image
from lorascripts.data.sources import scan_dataset
from lorascripts.errors import DatasetError


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    # EXIF orientation 6 (rotate 90 CW): a 40x20 file is a 20x40 picture
    wide = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = wide.getexif()
    exif[0x0112] = 6
    wide.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)
    # RGBA: transparent pixels take the background colour
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.save(tmp_path / "alpha.png")
    img = load_image(tmp_path / "alpha.png", background=(10, 200, 30))
    assert img.mode == "RGB" and img.getpixel((5, 5)) == (10, 200, 30) and img.getpixel((0, 0)) == (255, 0, 0)
    # 16-bit greyscale keeps its tones instead of clipping to white
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    row = np.asarray(load_image(tmp_path / "deep.png"))[0, :, 0]
    assert row[0] < 5 and 120 < row[32] < 136 and row[-1] > 250
    # palette, greyscale, CMYK
    Image.new("P", (8, 8), 3).save(tmp_path / "pal.png")
    Image.new("L", (8, 8), 90).save(tmp_path / "grey.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    for name in ("pal.png", "grey.png", "cmyk.jpg"):
        assert load_image(tmp_path / name).mode == "RGB"
    assert load_image(tmp_path / "grey.png").getpixel((1, 1)) == (90, 90, 90)
    red = load_image(tmp_path / "cmyk.jpg").getpixel((4, 4))
    assert red[0] > 200 and red[1] < 60


def test_corrupt_image_is_named_or_skipped(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", n=3)
    (data / "img_01.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetError, match="img_01.png"):
        scan_dataset(data)
    result = scan_dataset(data, bad_images="skip")
    assert len(result.items) == 2 and result.skipped == [data / "img_01.png"]
    assert any("img_01.png" in w for w in result.warnings)


def test_missing_captions_listed_and_policies(tmp_path: Path) -> None:
    data = tmp_path / "5_red things"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (200, 0, 0)).save(data / f"p{i}.png")
    (data / "p0.txt").write_text("a red square", encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        scan_dataset(tmp_path)
    assert "2 image(s)" in str(err.value) and "p1.png" in str(err.value) and "p2.png" in str(err.value)
    result = scan_dataset(tmp_path, missing_captions="folder_name")
    captions = {i.path.name: (i.caption, i.repeats) for i in result.items}
    assert captions == {
        "p0.png": ("a red square", 5),
        "p1.png": ("red things", 5),
        "p2.png": ("red things", 5),
    }
    assert result.dataset_dirs == {"5_red things": {"n_repeats": 5, "img_count": 3}}
    assert scan_dataset(tmp_path, missing_captions="trigger", trigger_word="zk").items[1].caption == "zk"


def test_metadata_csv_wins_and_tags_are_counted(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", n=4)
    (data / "img_00.txt").write_text("ignored sidecar", encoding="utf-8")
    result = scan_dataset(data, trigger_word="zk")
    assert result.items[0].caption.startswith("a ") and "sidecar" not in result.items[0].caption
    freq = result.tag_frequency["d"]
    assert freq["zk"] == 4 and sum(freq.values()) == 8


def test_bad_metadata_header_is_explained(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", n=1)
    (data / "metadata.csv").write_text("name,words\nimg_00.png,x\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="file_name"):
        scan_dataset(data)


def test_buckets_keep_aspect_ratio() -> None:
    buckets = BucketSet((512, 512), min_reso=256, max_reso=1024, step=64)
    for w, h in buckets.sizes:
        assert w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512
    tall = buckets.assign(600, 1200)
    assert tall[1] > tall[0] and abs(tall[0] / tall[1] - 0.5) < 0.1
    assert buckets.assign(1000, 1000) == (512, 512)
    image = Image.new("RGB", (600, 1200))
    cropped, crop_tl, original = buckets.resize_and_crop(image, tall, None)
    assert cropped.size == tall and original == (600, 1200) and min(crop_tl) >= 0
    small = BucketSet((512, 512), min_reso=64, step=64, no_upscale=True)
    assert small.assign(200, 130) == (192, 128)


def test_caption_processing() -> None:
    rng = random.Random(0)
    assert process_caption("a cat, red", trigger_word="zk") == "zk, a cat, red"
    assert process_caption("zk, a cat", trigger_word="zk") == "zk, a cat"
    shuffled = {
        process_caption("zk, a, b, c, d", trigger_word="zk", shuffle=True, rng=rng) for _ in range(20)
    }
    assert len(shuffled) > 1 and all(s.startswith("zk, ") for s in shuffled)
    kept = process_caption("x, y, a, b, c", keep_tokens=2, shuffle=True, rng=rng)
    assert kept.startswith("x, y, ")
    assert process_caption("a, b", trigger_word="zk", caption_dropout_rate=1.0, rng=rng) == "zk"
    dropped = process_caption("t, a, b, c, d, e, f", trigger_word="t", tag_dropout_rate=0.99, rng=rng)
    assert dropped == "t"
