"""Bad input, images and captions: every case of docs/BAD_INPUTS.md on the paths a user hits (dataset scan for
training, the pre-flight checks, captioning a folder), each asserting its documented outcome."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import BROKEN_IMAGES, good_images, png_rgb16
from PIL import Image
from tiny_captioners import build_tiny_wd14

from lorascripts.caption.base import create_captioner
from lorascripts.caption.labeler import auto_label
from lorascripts.data.buckets import BucketSet
from lorascripts.data.captions import read_caption_file, read_metadata, write_metadata
from lorascripts.data.checks import check_dataset
from lorascripts.data.images import image_size, load_image
from lorascripts.data.sources import scan_dataset
from lorascripts.errors import DatasetError, ModelError


@pytest.fixture(scope="module")
def wd14(tmp_path_factory):
    return create_captioner("wd14", str(build_tiny_wd14(tmp_path_factory.mktemp("wd14"))[0]))


# --- images that cannot be used --------------------------------------------------------------------------------


FIXES = {
    "decompression_bomb": "Downscale it below 179 megapixels or delete it.",
    "broken_symlink": "is a broken symlink (or a symlink loop). Fix or delete the link.",
    "symlink_loop": "is a broken symlink (or a symlink loop). Fix or delete the link.",
}


@pytest.mark.parametrize("case", sorted(BROKEN_IMAGES))
def test_broken_image_is_named_or_skipped(case: str, tmp_path: Path) -> None:
    good = good_images(tmp_path)
    bad = BROKEN_IMAGES[case](tmp_path)
    write_metadata(tmp_path / "metadata.csv", {p.name: "zkstyle" for p in [*good, bad]})
    with pytest.raises(DatasetError, match=bad.name) as error:
        scan_dataset(tmp_path)
    assert FIXES.get(case, "or set `bad_images: skip`") in str(error.value)
    skipped = scan_dataset(tmp_path, bad_images="skip")
    assert [i.path for i in skipped.items] == good and skipped.skipped == [bad]
    assert [w for w in skipped.warnings if bad.name in w] == [w for w in skipped.warnings if "skipping" in w]
    assert len(skipped.warnings) == 1  # not also reported as a metadata.csv row without an image
    report = check_dataset(tmp_path, resolution=32)
    assert [(f.file, f.code, f.severity) for f in report.errors] == [(bad.name, "unreadable", "error")]


def test_broken_images_are_all_counted(tmp_path: Path) -> None:
    good_images(tmp_path)
    bad = [builder(tmp_path) for builder in BROKEN_IMAGES.values()]
    with pytest.raises(DatasetError, match=f"{len(bad) - 1} more image"):
        scan_dataset(tmp_path, missing_captions="empty")


# --- unusual images that work ----------------------------------------------------------------------------------


def test_cmyk_16bit_and_palette_transparency_load_correctly(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = load_image(tmp_path / "cmyk.jpg").getpixel((4, 4))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    row = np.asarray(load_image(tmp_path / "grey16.png"))[0, :, 0]
    assert row[0] < 5 and 120 < row[32] < 136 and row[-1] > 250  # tones kept, not clipped to white
    rgb16 = np.zeros((4, 4, 3), dtype=np.uint16)
    rgb16[..., 0], rgb16[..., 2] = 65535, 32896
    (tmp_path / "rgb16.png").write_bytes(png_rgb16(rgb16))
    assert load_image(tmp_path / "rgb16.png").getpixel((1, 1)) == (255, 0, 128)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "pal.png", transparency=0)
    loaded = load_image(tmp_path / "pal.png", background=(10, 200, 30))
    assert loaded.getpixel((0, 0)) == (10, 200, 30) and loaded.getpixel((2, 2)) == (200, 10, 10)


@pytest.mark.parametrize(("orientation", "corner"), [(3, (1, 1)), (6, (1, 0)), (8, (0, 1))])
def test_exif_rotation_is_applied(orientation: int, corner: tuple[int, int], tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # a red mark in the stored top-left corner
    exif = stored.getexif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "rot.png", exif=exif)
    image = load_image(tmp_path / "rot.png")
    w, h = image.size
    assert (w, h) == ((20, 40) if orientation in (6, 8) else (40, 20)) == image_size(tmp_path / "rot.png")
    x, y = corner[0] * (w - 1), corner[1] * (h - 1)
    assert image.getpixel((x, y)) == (255, 0, 0)  # the mark moved where the camera meant it


def test_garbage_exif_is_ignored(tmp_path: Path) -> None:
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x09garbage"
    Image.new("RGB", (12, 6), (0, 0, 250)).save(tmp_path / "odd.jpg", exif=exif)
    assert load_image(tmp_path / "odd.jpg").size == (12, 6) == image_size(tmp_path / "odd.jpg")
    assert scan_dataset(tmp_path, missing_captions="empty").items[0].path.name == "odd.jpg"


def test_animated_gif_trains_its_first_frame_with_a_warning(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    write_metadata(tmp_path / "metadata.csv", {"anim.gif": "zkstyle"})
    assert [i.path.name for i in scan_dataset(tmp_path).items] == ["anim.gif"]
    red = load_image(tmp_path / "anim.gif").getpixel((5, 5))
    assert red[0] > 200 and red[1] < 50
    assert [f.code for f in check_dataset(tmp_path, resolution=32).warnings if f.code == "animated"] == [
        "animated"
    ]


def test_tiny_and_huge_images_load_and_bucket(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (9, 9, 9)).save(tmp_path / "tiny.png")
    grad = np.linspace(0, 255, 4000, dtype=np.uint8)
    Image.fromarray(np.broadcast_to(grad, (3000, 4000)).copy()).convert("RGB").save(
        tmp_path / "huge.jpg", quality=70
    )
    Image.new("RGB", (4000, 16), (1, 2, 3)).save(tmp_path / "strip.png")
    write_metadata(tmp_path / "metadata.csv", {n: "zkstyle" for n in ("tiny.png", "huge.jpg", "strip.png")})
    items = scan_dataset(tmp_path).items
    buckets = BucketSet((64, 64), min_reso=16, max_reso=128, step=8)
    for item in items:
        image = load_image(item.path)
        bucket = buckets.assign(*image.size)
        resized = buckets.resize_and_crop(image, bucket, None)[0]
        assert resized.size == bucket and 16 <= min(bucket) and max(bucket) <= 128
    flags = {(f.file, f.code) for f in check_dataset(tmp_path, resolution=64).flags}
    assert {("tiny.png", "too_small"), ("strip.png", "aspect_ratio")} <= flags
    assert not any(f == "huge.jpg" and c in ("unreadable", "too_small") for f, c in flags)


def test_unicode_and_spaces_in_names_match_their_captions(tmp_path: Path) -> None:
    names = ["日本 語 pic.png", "my photo (1).png", unicodedata.normalize("NFD", "café.png")]
    for i, name in enumerate(names):
        good_images(tmp_path / "tmp", 1)[0].rename(tmp_path / name)
        assert (tmp_path / name).exists(), i
    # rows as a spreadsheet writes them: composed (NFC) accents, a `./` prefix
    rows = '"./日本 語 pic.png","a, b"\nmy photo (1).png,two words\ncafé.png,accent\n'
    (tmp_path / "metadata.csv").write_text("file_name,caption\n" + rows, encoding="utf-8")
    captions = {unicodedata.normalize("NFC", i.path.name): i.caption for i in scan_dataset(tmp_path).items}
    assert captions == {"日本 語 pic.png": "a, b", "my photo (1).png": "two words", "café.png": "accent"}
    assert not check_dataset(tmp_path, resolution=32).errors


def test_empty_and_missing_folders_are_explained(tmp_path: Path, wd14) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures yet", encoding="utf-8")
    for call in (
        lambda: scan_dataset(empty),
        lambda: check_dataset(empty),
        lambda: auto_label(empty, wd14, show_progress=False),
    ):
        with pytest.raises(DatasetError, match="empty"):
            call()
    with pytest.raises(DatasetError, match="nowhere.*not a folder"):
        scan_dataset(tmp_path / "nowhere")
    assert not (empty / "metadata.csv").exists()


def test_repeat_folder_symlinked_back_is_not_trained_twice(tmp_path: Path) -> None:
    good = good_images(tmp_path / "5_style")
    (tmp_path / "10_again").symlink_to(tmp_path / "5_style")
    (tmp_path / "3_loop").symlink_to(tmp_path)
    result = scan_dataset(tmp_path, missing_captions="trigger", trigger_word="zk")
    assert [i.path for i in result.items] == good
    assert sum("links to a folder already in the dataset" in w for w in result.warnings) == 2


# --- captions and metadata.csv ---------------------------------------------------------------------------------


CSV_WORKS = {
    "bom": ("\ufefffile_name,caption\r\na.png,hello\r\n", {"a.png": "hello"}),
    "quotes_commas_newlines": (
        'file_name,caption\na.png,"say ""hi"", then\nleave"\n',
        {"a.png": 'say "hi", then\nleave'},
    ),
    "identical_duplicate_rows": ("file_name,caption\na.png,x\na.png,x\n", {"a.png": "x"}),
    "windows_paths": ("file_name,caption\n.\\sub\\a.png,x\n", {"sub/a.png": "x"}),
    "text_column": ("file_name,text\na.png,x\n", {"a.png": "x"}),
}


@pytest.mark.parametrize("case", sorted(CSV_WORKS))
def test_metadata_csv_variants_that_work(case: str, tmp_path: Path) -> None:
    text, expected = CSV_WORKS[case]
    (path := tmp_path / "metadata.csv").write_bytes(text.encode("utf-8"))
    assert read_metadata(path) == expected


CSV_ERRORS = {
    "conflicting_duplicates": (
        b"file_name,caption\na.png,x\nb.png,y\na.png,z\n",
        r"lines 2 and 4.*a\.png.*Keep one",
    ),
    "non_utf8": ("file_name,caption\na.png,ok\nb.png,café\n".encode("cp1252"), r"line 3.*not UTF-8.*0xe9"),
    "no_header": (b"a.png,x\nb.png,y\n", r"header must have `file_name` and `caption`"),
    "empty_file_name": (b"file_name,caption\n,orphan caption\n", r"line 2: empty file_name"),
}


@pytest.mark.parametrize("case", sorted(CSV_ERRORS))
def test_metadata_csv_errors_name_file_and_line(case: str, tmp_path: Path) -> None:
    data, pattern = CSV_ERRORS[case]
    good_images(tmp_path)
    (path := tmp_path / "metadata.csv").write_bytes(data)
    for call in (
        lambda: read_metadata(path),
        lambda: scan_dataset(tmp_path),
        lambda: check_dataset(tmp_path),
    ):
        with pytest.raises(DatasetError, match=pattern) as error:
            call()
        assert str(path) in str(error.value)


def test_missing_rows_and_rows_without_files(tmp_path: Path) -> None:
    good = good_images(tmp_path, 3)
    write_metadata(tmp_path / "metadata.csv", {good[0].name: "one", "ghost.png": "boo"})
    with pytest.raises(
        DatasetError, match=r"2 image\(s\) have no caption.*good_1.png, good_2.png.*missing_captions"
    ):
        scan_dataset(tmp_path)
    result = scan_dataset(tmp_path, missing_captions="trigger", trigger_word="zk")
    assert [i.caption for i in result.items] == ["one", "zk", "zk"]
    assert any("ghost.png" in w and "name no image" in w for w in result.warnings)
    assert {f.file for f in check_dataset(tmp_path).errors if f.code == "no_caption"} == {
        "good_1.png",
        "good_2.png",
    }


def test_non_utf8_sidecar_is_named_everywhere(tmp_path: Path, wd14) -> None:
    good = good_images(tmp_path)
    good[0].with_suffix(".txt").write_bytes("first line\nzkstyle, café".encode("latin-1"))
    good[1].with_suffix(".txt").write_text("zkstyle", encoding="utf-8")
    pattern = r"good_0\.txt, line 2: the caption file is not UTF-8"
    for call in (
        lambda: read_caption_file(good[0].with_suffix(".txt")),
        lambda: scan_dataset(tmp_path),
        lambda: check_dataset(tmp_path),
        lambda: auto_label(tmp_path, wd14, mode="skip_existing", show_progress=False),
    ):
        with pytest.raises(DatasetError, match=pattern):
            call()


# --- captioning a folder ---------------------------------------------------------------------------------------


def test_captioning_keeps_captions_of_images_it_cannot_read(tmp_path: Path, wd14) -> None:
    good = good_images(tmp_path, 3)
    cut = BROKEN_IMAGES["truncated_png"](tmp_path)
    bomb = BROKEN_IMAGES["decompression_bomb"](tmp_path)
    write_metadata(tmp_path / "metadata.csv", {cut.name: "hand written, keep me", good[0].name: "old"})
    result = auto_label(tmp_path, wd14, show_progress=False)
    rows = read_metadata(tmp_path / "metadata.csv")
    assert sorted(result.failed) == sorted([cut.name, bomb.name]) and result.captioned == 3
    assert rows[cut.name] == "hand written, keep me" and bomb.name not in rows
    assert rows[good[0].name] != "old" and all(rows[p.name] is not None for p in good)
    assert cut.name in result.failed[cut.name] and "Downscale" in result.failed[bomb.name]


def test_captioning_resumes_after_a_cut_in_a_multibyte_character(tmp_path: Path, wd14) -> None:
    good_images(tmp_path, 3)
    partial = tmp_path / "metadata.csv.partial"
    line = '{"file": "good_1.png", "caption": "caf\u00e9"}'.encode()
    cut = line[:-3]  # ends inside the two-byte é
    assert cut.endswith(b"\xc3")
    partial.write_bytes(b'{"file": "good_0.png", "caption": "from run 1"}\n3\n' + cut)
    result = auto_label(tmp_path, wd14, show_progress=False)
    assert result.resumed == 1 and result.captioned == 2
    assert read_metadata(tmp_path / "metadata.csv")["good_0.png"] == "from run 1" and not partial.exists()


def test_captioning_output_folder_is_created_and_bad_models_are_named(tmp_path: Path, wd14) -> None:
    good_images(tmp_path / "d")
    out = tmp_path / "new" / "sub" / "metadata.csv"
    auto_label(tmp_path / "d", wd14, out, show_progress=False)
    assert len(read_metadata(out)) == 2
    with pytest.raises(DatasetError, match="is a folder"):
        auto_label(tmp_path / "d", wd14, tmp_path / "new", show_progress=False)
    with pytest.raises(ModelError, match="nope/model does not exist"):
        create_captioner("blip", str(tmp_path / "nope" / "model"), device="cpu")
    (bad := tmp_path / "broken_model").mkdir()
    (bad / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="config.json is not valid JSON"):
        create_captioner("blip", str(bad), device="cpu")


def test_training_preflight_reports_odd_images_without_refusing_them(tmp_path: Path) -> None:
    from lorascripts.config import config_from_dict
    from lorascripts.data.checks import preflight

    data = tmp_path / "data"
    good_images(data, 2, size=(64, 64))
    Image.new("RGB", (1, 1), (9, 9, 9)).save(data / "tiny.png")
    frames = [Image.new("RGB", (64, 64), c) for c in ((250, 0, 0), (0, 250, 0))]
    frames[0].save(data / "anim.gif", save_all=True, append_images=frames[1:])
    BROKEN_IMAGES["truncated_jpeg"](data)
    cfg = config_from_dict(
        {
            "base_model": "toy",
            "train_data_dir": str(data),
            "output_dir": str(tmp_path / "out"),
            "resolution": 64,
            "bad_images": "skip",
            "missing_captions": "trigger",
            "trigger_word": "zk",
        }
    )
    scan = scan_dataset(data, bad_images="skip", missing_captions="trigger", trigger_word="zk")
    (tmp_path / "out").mkdir()
    report = preflight(cfg, scan)
    assert not report.errors  # the skipped image is not in the scan; the odd ones are only warnings
    assert {(f.file, f.code) for f in report.warnings} >= {
        ("tiny.png", "too_small"),
        ("anim.gif", "animated"),
    }
    assert "tiny.png" in (tmp_path / "out" / "dataset_report.html").read_text(encoding="utf-8")


def test_check_dataset_sees_what_training_sees_through_symlinked_folders(tmp_path: Path) -> None:
    """A repeat folder that is a link to pictures elsewhere is trained; the dataset check must look at it too
    (it used to skip linked folders), and links back into the dataset or to its parents are not walked."""
    from lorascripts.data.checks import collect_images

    root = tmp_path / "data"
    own = good_images(root / "5_style")
    elsewhere = good_images(tmp_path / "elsewhere", n=2)
    (root / "2_linked").symlink_to(tmp_path / "elsewhere")
    (root / "3_loop").symlink_to(root)
    (root / "4_up").symlink_to(tmp_path)
    trained = scan_dataset(root, missing_captions="trigger", trigger_word="zk").items
    checked = [i.file for i in collect_images(root)]
    expected = [f"5_style/{p.name}" for p in own] + [f"2_linked/{p.name}" for p in elsewhere]
    assert sorted(checked) == sorted(expected)
    assert len(checked) == len(trained) == len(own) + len(elsewhere)
