"""The WebUI door: the tab's actions and training session, the real gradio tab in headless Chromium (gradio 3.41
as in AUTOMATIC1111 and 4.40 as in Forge), around the stand-in WebUI hooks (tests/webui_standin)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from browser import gradio_click as _click
from browser import gradio_set as _set
from browser import gradio_text as _text
from browser import webui_load_dataset
from comfy_host import REPO
from helpers_train import make_dataset
from PIL import Image
from safetensors import safe_open

from lorascripts.models.families.sd.ldm_names import original_layout_shapes
from lorascripts.models.loader import load_base_model
from lorascripts.network.webui_check import check_webui_compat

STANDIN = Path(__file__).resolve().parent / "webui_standin"
FORGE_FLUX = (
    "backend/huggingface/black-forest-labs/FLUX.1-dev"  # where Forge ships FLUX.1's configs/tokenizers
)
ARTIFACTS = REPO / ".cache" / "test-artifacts"


@pytest.fixture
def webui(tmp_path, monkeypatch):
    """The stand-in WebUI modules in this process, rooted at tmp_path (models/, outputs/, models/Lora)."""
    monkeypatch.setenv("WEBUI_STANDIN_ROOT", str(tmp_path))
    monkeypatch.syspath_prepend(str(STANDIN))
    for name in [m for m in sys.modules if m == "modules" or m.startswith("modules.") or m == "networks"]:
        monkeypatch.delitem(sys.modules, name)
    import networks
    from modules import sd_models, shared

    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    yield {"root": tmp_path, "shared": shared, "sd_models": sd_models, "networks": networks}
    for name in [m for m in sys.modules if m == "modules" or m.startswith("modules.") or m == "networks"]:
        sys.modules.pop(name, None)


def _install_checkpoint(root: Path, model) -> str:
    folder = root / "models" / "Stable-diffusion"
    shutil.copyfile(model.single_file, folder / model.single_file.name)
    shutil.copytree(model.tokenizer_dir, folder / "tokenizer", dirs_exist_ok=True)
    return model.single_file.name


# --- actions: the caption table and the form, without gradio ---------------------------------------------------
def test_caption_table_loads_edits_and_refuses_strangers(tmp_path):
    from lora_scripts_webui.actions import UserError, dataset_folder, load_table, save_table

    data = make_dataset(tmp_path / "data", n=3, metadata=False)
    rows, note = load_table(str(data))
    assert [r[0] for r in rows] == ["img_00.png", "img_01.png", "img_02.png"]
    assert all(r[1].startswith("a ") for r in rows) and "all captioned" in note
    rows[1][1] = "zkstyle,   an edited   caption"
    assert "saved 3 captions" in save_table(str(data), rows)
    from lorascripts.data.captions import read_metadata

    assert read_metadata(data / "metadata.csv")["img_01.png"] == "zkstyle, an edited caption"
    assert load_table(str(data))[0][1][1] == "zkstyle, an edited caption"  # metadata.csv wins over .txt now
    with pytest.raises(UserError, match="not an image"):
        save_table(str(data), [["../../etc/passwd", "x"]])
    with pytest.raises(UserError, match="is not a folder"):
        dataset_folder(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no images"):
        dataset_folder(str(tmp_path / "empty"))


def test_form_errors_are_clear_before_training(webui, tiny_sd1, tmp_path):
    from lora_scripts_webui.actions import TrainForm, UserError, build_config

    webui["sd_models"].list_models()
    title_less = _install_checkpoint(webui["root"], tiny_sd1)
    webui["sd_models"].list_models()
    title = next(iter(webui["sd_models"].checkpoints_list))
    assert title.startswith(title_less)
    data = make_dataset(tmp_path / "data", n=2)
    form = TrainForm(dataset=str(data), checkpoint=title, lora_name="x", preset="character", rank=4, steps=8)
    config = build_config(form)
    assert config.base_model.endswith(title_less) and config.lora_rank == 4
    assert config.keep_tokens == 1 and config.save_steps == 2  # preset value kept, save every quarter
    from lorascripts.host.form import form_defaults
    from lorascripts.host.presets import PRESETS

    for preset, values in PRESETS.items():  # fields left empty (None) take the preset's values
        untouched = build_config(TrainForm(dataset=str(data), checkpoint=title, lora_name="x", preset=preset))
        assert {k: getattr(untouched, k) for k in values} == values, preset
        shown = form_defaults(preset)  # ... the values the tab shows for the preset (test_tab_... reads them)
        assert all(getattr(untouched, k) == v for k, v in shown.items() if v), (preset, shown)
    # relative paths in the advanced YAML are taken from the WebUI's folder
    (webui["root"] / "models" / "Lora").mkdir(parents=True, exist_ok=True)
    (webui["root"] / "models" / "Lora" / "old.safetensors").write_bytes(b"{}")
    advanced = "initial_lora: models/Lora/old.safetensors"
    cfg = build_config(TrainForm(dataset=str(data), checkpoint=title, lora_name="x", advanced_yaml=advanced))
    assert cfg.initial_lora == str(webui["root"] / "models" / "Lora" / "old.safetensors")
    with pytest.raises(UserError, match="not in the WebUI's checkpoint list"):
        build_config(TrainForm(dataset=str(data), checkpoint="sd_xl_base.safetensors", lora_name="x"))
    with pytest.raises(UserError, match="advanced YAML"):
        build_config(TrainForm(dataset=str(data), checkpoint=title, lora_name="x", advanced_yaml="- a list"))
    with pytest.raises(UserError, match="lora_rnak|unknown"):
        build_config(
            TrainForm(dataset=str(data), checkpoint=title, lora_name="x", advanced_yaml="lora_rnak: 4")
        )


def test_settings_and_lora_dir_follow_the_webui(webui):
    from lora_scripts_webui import hooks

    shared = webui["shared"]
    assert hooks.lora_dir() == webui["root"] / "models" / "Lora"
    shared.cmd_opts.lora_dir = str(webui["root"] / "elsewhere")
    assert hooks.lora_dir() == webui["root"] / "elsewhere"  # --lora-dir honoured
    shared.opts.lora_scripts_output_dir = str(webui["root"] / "mine")
    assert hooks.lora_dir() == webui["root"] / "mine"  # our own setting wins


# --- the training session: child process, stop/resume, failure, every family's key check ------------------------
def _form_config(webui, model, data: Path, **fields):
    from lora_scripts_webui.actions import TrainForm, build_config

    name = _install_checkpoint(webui["root"], model)
    webui["sd_models"].list_models()
    title = next(t for t in webui["sd_models"].checkpoints_list if t.startswith(name))
    advanced = "resolution: 32\nbucket_reso_steps: 8\nmin_bucket_reso: 16\nmixed_precision: 'no'\ndataset_checks: warn"
    form = TrainForm(dataset=str(data), checkpoint=title, advanced_yaml=advanced, **fields)
    return build_config(form), form


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_session_output_passes_webui_key_check(webui, family, request, tmp_path):
    from lora_scripts_webui.session import TrainingSession

    model = request.getfixturevalue(f"tiny_{family}")
    data = make_dataset(tmp_path / "data", n=2)
    config, form = _form_config(
        webui, model, data, lora_name=f"{family}_card", rank=4, steps=2, trigger_word="zk"
    )
    session = TrainingSession()
    session.start(config, form.lora_name)
    snap = session.wait(600)
    assert snap.state == "finished", snap.message
    lora = webui["root"] / "models" / "Lora" / f"{family}_card.safetensors"
    card = json.loads(lora.with_suffix(".json").read_text())
    assert card["activation text"] == "zk" and card["preferred weight"] == 0.7
    assert card["sd version"] == {"sd2": "SD2", "sdxl": "SDXL"}[family]
    assert "WebUI key check passed" in snap.message
    # the pre-flight estimate is shown under the progress bar
    assert snap.estimate.startswith("estimate: ") and "s/step" in snap.estimate
    with safe_open(str(lora), "pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    base = load_base_model(str(model.single_file), tokenizer_path=str(model.tokenizer_dir))
    report = check_webui_compat(shapes, original_layout_shapes(base), base.family)
    assert report.ok and report.applied == report.total, report.summary()
    assert "unload_model_weights" in (webui["root"] / "webui_calls.log").read_text()
    assert f"list_available_networks:{family}_card" in (webui["root"] / "webui_calls.log").read_text()


def _transformer_form(webui, tmp_path: Path, stem: str, name: str, parts: dict, advanced: str = ""):
    """The tab's form for the checkpoint `stem*` of the list with the part files chosen: 2 steps at 32 px on a
    2-image dataset, trigger word zk."""
    from lora_scripts_webui.actions import TrainForm

    webui["sd_models"].list_models()
    title = next(t for t in webui["sd_models"].checkpoints_list if t.startswith(stem))
    data = make_dataset(tmp_path / "data", n=2)
    advanced += (
        "text_max_length: 16\nresolution: 32\nbucket_reso_steps: 8\nmin_bucket_reso: 16\nmixed_precision: 'no'\n"
        "dataset_checks: warn"
    )
    return TrainForm(
        dataset=str(data), checkpoint=title, lora_name=name, rank=4, steps=2, trigger_word="zk",
        advanced_yaml=advanced, parts=parts,
    )  # fmt: skip


def _train_to_card(webui, config, name: str, family: str, sd_version: str) -> None:
    """The tab's session trains `config` as LoRA `name`; its card and metadata are `family`'s, the WebUI key check
    passed."""
    from lora_scripts_webui.session import TrainingSession

    session = TrainingSession()
    session.start(config, name)
    snap = session.wait(600)
    assert snap.state == "finished", snap.message
    lora = webui["root"] / "models" / "Lora" / f"{name}.safetensors"
    card = json.loads(lora.with_suffix(".json").read_text())
    assert card["sd version"] == sd_version and card["activation text"] == "zk"
    assert "WebUI key check passed" in snap.message, snap.message  # by the family's rules
    with safe_open(str(lora), "pt") as fh:
        assert fh.metadata()["ss_base_model_version"] == family


def _forge_flux(root: Path, tiny_tokenizer, tmp_path: Path) -> dict[str, str]:
    """The tiny FLUX where Forge keeps FLUX.1: the transformer in models/Stable-diffusion, ae.safetensors in
    models/VAE, the text encoders in models/text_encoder, and its CLIP and T5 tokenizers only where Forge ships
    FLUX.1's (backend/huggingface/black-forest-labs/FLUX.1-dev/tokenizer, tokenizer_2); returns the part titles."""
    from tiny_flux import build_tiny_flux

    tiny = build_tiny_flux(tmp_path / "flux", tiny_tokenizer)
    models, built = root / "models", tiny.root / "models"
    shutil.copyfile(tiny.transformer, models / "Stable-diffusion" / tiny.transformer.name)
    bundled = root / FORGE_FLUX
    shutil.copytree(tiny.transformer.parent / "t5_tokenizer", bundled / "tokenizer_2")
    shutil.copytree(tiny_tokenizer, bundled / "tokenizer")
    parts = {
        "vae": "ae.safetensors",
        "text_encoder": "clip_l.safetensors",
        "text_encoder_2": "t5xxl_fp16.safetensors",
    }
    for key, name in parts.items():
        folder = models / ("VAE" if key == "vae" else "text_encoder")
        folder.mkdir(exist_ok=True)
        shutil.copyfile(built / ("vae" if key == "vae" else "text_encoders") / name, folder / name)
    return parts


def test_session_trains_flux_with_the_part_files_chosen(webui, tiny_tokenizer, tmp_path, monkeypatch):
    """A FLUX.1 transformer in the checkpoint list trains with the FLUX family, with the part files chosen from
    the WebUI's folders and the tokenizers Forge ships (the tab passes its backend/huggingface folder to the
    training child; the Hugging Face cache is empty and offline); the card says Flux."""
    from lora_scripts_webui import hooks
    from lora_scripts_webui.actions import UserError, build_config

    models = webui["root"] / "models"
    parts = _forge_flux(webui["root"], tiny_tokenizer, tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home_empty"))  # the training child inherits both
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hooks.part_files("vae") == {"ae.safetensors": str(models / "VAE" / "ae.safetensors")}
    assert list(hooks.part_files("text_encoder")) == ["clip_l.safetensors", "t5xxl_fp16.safetensors"]
    form = _transformer_form(webui, tmp_path, "flux1-tiny", "flux_card", parts)
    config = build_config(form)
    assert (config.vae, config.text_encoder, config.text_encoder_2) == (
        str(models / "VAE" / "ae.safetensors"),
        str(models / "text_encoder" / "clip_l.safetensors"),
        str(models / "text_encoder" / "t5xxl_fp16.safetensors"),
    )
    assert config.memory_preset == "off"
    assert config.tokenizer_roots == [str(webui["root"] / "backend" / "huggingface")]
    assert config.tokenizer_path is None
    with pytest.raises(UserError, match="vae 'missing.safetensors' is not a file in models/VAE"):
        build_config(dataclasses.replace(form, parts={**parts, "vae": "missing.safetensors"}))
    with pytest.raises(UserError, match="memory_preset"):
        build_config(dataclasses.replace(form, memory_preset="6gb"))
    # the WebUI key check by the FLUX.1 rules (Forge's key maps)
    _train_to_card(webui, config, "flux_card", "flux1", "Flux")
    log = next((webui["root"] / "outputs").rglob("train_output.log")).read_text()
    for folder in ("tokenizer", "tokenizer_2"):  # CLIP-L, T5: found under the tab's tokenizer root
        assert f"tokenizer: {webui['root'] / FORGE_FLUX / folder}\n" in log, log[-3000:]


def test_session_trains_zimage_with_the_part_files_chosen(webui, tiny_zimage, tiny_tokenizer, tmp_path):
    """Forge Neo (HOSTS.md): a Z-Image transformer in the checkpoint list trains with the Z-Image family, with its
    VAE and Qwen3 files chosen from models/VAE and models/text_encoder (the Qwen3 tokenizer beside them, found before the
    CLIP tokenizer Forge ships under its tokenizer root); the card says Z-Image."""
    from lora_scripts_webui import hooks
    from lora_scripts_webui.actions import build_config

    models = webui["root"] / "models"
    shutil.copyfile(tiny_zimage.transformer, models / "Stable-diffusion" / tiny_zimage.transformer.name)
    for folder, file in (("VAE", tiny_zimage.vae), ("text_encoder", tiny_zimage.text_encoder)):
        (models / folder).mkdir(exist_ok=True)
        shutil.copyfile(file, models / folder / file.name)
    shutil.copytree(tiny_zimage.tokenizer_dir, models / "text_encoder" / "qwen_tokenizer")
    # Forge's bundled CLIP tokenizer under its tokenizer root: Z-Image still reads its own Qwen3 one
    shutil.copytree(tiny_tokenizer, webui["root"] / FORGE_FLUX / "tokenizer", dirs_exist_ok=True)
    assert hooks.tokenizer_roots()
    parts = {"vae": "ae.safetensors", "text_encoder": "qwen_3_4b.safetensors"}
    assert list(hooks.part_files("text_encoder")) == ["qwen_3_4b.safetensors"]
    config = build_config(_transformer_form(webui, tmp_path, "z_image_tiny", "zimage_card", parts))
    assert (config.vae, config.text_encoder) == (
        str(models / "VAE" / "ae.safetensors"),
        str(models / "text_encoder" / "qwen_3_4b.safetensors"),
    )
    assert config.tokenizer_path is None
    _train_to_card(webui, config, "zimage_card", "zimage", "Z-Image")


def test_session_stop_saves_then_train_resumes(webui, tiny_sd1, tmp_path):
    from lora_scripts_webui.session import TrainingSession

    data = make_dataset(tmp_path / "data", n=4)
    config, form = _form_config(webui, tiny_sd1, data, lora_name="stoppable", rank=4, steps=60)
    session = TrainingSession()
    session.start(config, form.lora_name)
    deadline = time.time() + 300
    while session.snapshot().step < 2 and time.time() < deadline and session.snapshot().running:
        time.sleep(0.2)
    with pytest.raises(RuntimeError, match="already"):
        session.start(config, form.lora_name)  # one run at a time
    assert session.request_stop()
    snap = session.wait(300)
    assert snap.state == "stopped", snap.message
    assert "to resume" in snap.message
    saved = list((webui["root"] / "models" / "Lora").glob("stoppable-step*.safetensors"))
    assert len(saved) == 1  # the LoRA so far, usable at once; the final name stays free
    stopped_at = snap.step
    assert stopped_at < 60
    session.start(config, form.lora_name)  # Train again, same settings
    done = session.wait(300)
    assert done.state == "finished", done.message
    assert done.losses[0][0] > stopped_at  # resumed from the checkpoint, not from step 1
    assert (webui["root"] / "models" / "Lora" / "stoppable.safetensors").is_file()
    assert not saved[0].exists()  # the stop-time copy is gone once the real one is there


def test_session_failure_shows_its_cause(webui, tiny_sd1, tmp_path):
    from lora_scripts_webui.session import TrainingSession

    data = make_dataset(tmp_path / "data", n=3)
    (data / "img_01.png").write_bytes(b"not a png at all")
    config, form = _form_config(webui, tiny_sd1, data, lora_name="broken", rank=4, steps=2)
    config = dataclasses.replace(config, dataset_checks="error")
    session = TrainingSession()
    session.start(config, form.lora_name)
    snap = session.wait(300)
    assert snap.state == "failed"
    assert "exit code 3" in snap.message and "img_01.png" in snap.message


# --- the real tab in a browser ------------------------------------------------------------------------------------
# gradio 4 renders a hidden measuring table before the visible (virtual) one
ROWS = (
    "(() => { const v = document.querySelectorAll('#lora_scripts_captions svelte-virtual-table-viewport tbody tr');"
    " return v.length ? [...v] : [...document.querySelectorAll('#lora_scripts_captions tbody tr')]; })()"
)


def _edit_cell(browser, row: int, text: str) -> None:
    """Double-click a caption cell and type into it with real key events, as a user does."""
    browser.evaluate(
        f"{ROWS}[{row}].querySelectorAll('td')[1].dispatchEvent(new MouseEvent('dblclick', {{bubbles: true}}))"
    )
    browser.wait_for(
        "(() => { const el = [...document.querySelectorAll('#lora_scripts_captions input')]"
        ".find(e => e.type !== 'file'); if (!el) return false; el.focus(); el.select(); return true; })()"
    )
    browser.call("Input.insertText", text=text)
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)


def _caption_and_edit_in_browser(browser, tagger, data: Path) -> None:
    """Caption now with the tiny tagger, edit a cell, save: metadata.csv holds the edit."""
    _set(browser, "lora_scripts_caption_model", tagger)
    _set(browser, "lora_scripts_trigger", "zkwebui")
    _click(browser, "lora_scripts_caption")
    assert "captioned 3 images" in browser.wait_for(
        f"{_text('lora_scripts_dataset_status')}.includes('captioned') && {_text('lora_scripts_dataset_status')}"
    )
    cells = browser.wait_for(
        f"(() => {{ const t = {ROWS}.map(r => r.innerText);"
        " return t.length === 3 && t.every(x => x.includes('zkwebui')) && t; })()"
    )
    assert any("red" in c and "theme" in c for c in cells), cells
    _edit_cell(browser, 1, "zkwebui, edited in the browser")
    _click(browser, "lora_scripts_save")
    browser.wait_for(f"{_text('lora_scripts_dataset_status')}.includes('saved 3 captions')")
    from lorascripts.data.captions import read_metadata

    captions = read_metadata(data / "metadata.csv")
    assert captions["img_01.png"] == "zkwebui, edited in the browser"
    assert all(c.startswith("zkwebui") for c in captions.values()) and len(captions) == 3


def _assert_the_tab_shows_the_form_defaults(browser) -> None:
    """The numbers the tab shows for the style preset are host/form.py's (the presets', then the schema's)."""
    from lorascripts.host.form import FIELD_BY_NAME

    shown = browser.evaluate(
        "['rank', 'alpha', 'steps', 'lr', 'resolution', 'batch']"
        ".map(n => Number(document.querySelector(`#lora_scripts_${n} input`).value))"
    )
    names = ["rank", "alpha", "steps", "learning_rate", "resolution", "batch_size"]
    assert shown == [FIELD_BY_NAME[n].shown("style") for n in names]
    from lorascripts.host.parts import AUTOMATIC, part_fields

    lists = [
        "memory_preset",
        *(spec.key for spec in part_fields()),
    ]  # in the closed diffusion-transformer section
    values = browser.evaluate(
        f"{lists}.map(n => (document.querySelector(`#lora_scripts_${{n}} input`) || {{}}).value)"
    )
    assert values == ["off", *[AUTOMATIC] * (len(lists) - 1)], values


@pytest.mark.parametrize("gradio", ["3", "4"])
def test_tab_caption_train_finish_in_browser(gradio, tiny_sd1, tmp_path):
    from browser import Browser
    from tiny_captioners import build_tiny_wd14
    from webui_host import WebUIServer

    root = tmp_path / "webui"
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    _install_checkpoint(root, tiny_sd1)
    data = tmp_path / "images"
    data.mkdir()
    for i, colour in enumerate([(220, 30, 30), (30, 200, 40), (30, 40, 220)]):
        Image.new("RGB", (40, 40), colour).save(data / f"img_{i:02d}.png")
    tagger, _ = build_tiny_wd14(tmp_path / "wd14", size=32)
    server = WebUIServer(root, gradio)
    browser = Browser()
    try:
        assert "3 images, 3 without a caption" in webui_load_dataset(browser, server.url, data, timeout=120)
        _caption_and_edit_in_browser(browser, tagger, data)
        _assert_the_tab_shows_the_form_defaults(browser)
        for elem_id, value in [("lora_scripts_name", "webui_lora"), ("lora_scripts_rank", 4)]:
            _set(browser, elem_id, value)
        _set(browser, "lora_scripts_steps", 30)
        _set(browser, "lora_scripts_sample", "zkwebui, a red square")
        _set(
            browser,
            "lora_scripts_advanced",
            "resolution: 32\nbucket_reso_steps: 8\nmin_bucket_reso: 16\nmixed_precision: 'no'\nsample_steps: 2",
        )
        _click(browser, "lora_scripts_train")
        seen = browser.wait_for(
            "(() => { const p = document.querySelector('#lora_scripts_progress .lora-scripts-progress');"
            " return p && p.dataset.state === 'training' && +p.dataset.step > 0 && p.innerText; })()",
            timeout=300,
        )
        assert "ETA" in seen and "loss" in seen, seen
        _click(browser, "lora_scripts_stop")  # while the Train event is still streaming
        stopped = browser.wait_for(
            f"{_text('lora_scripts_status')}.includes('to resume') && {_text('lora_scripts_status')}",
            timeout=300,
        )
        assert "Stopped at step" in stopped and "The LoRA so far is webui_lora-step" in stopped
        assert list((root / "models" / "Lora").glob("webui_lora-step*.safetensors"))  # usable right away
        _click(browser, "lora_scripts_train")  # same settings: resumes from the checkpoint
        status = browser.wait_for(
            f"{_text('lora_scripts_status')}.includes('<lora:') && {_text('lora_scripts_status')}",
            timeout=400,
        )
        assert "<lora:webui_lora:0.7>" in status and "WebUI key check passed" in status
        assert browser.wait_for("!!document.querySelector('#lora_scripts_loss img')")
        assert browser.wait_for("document.querySelectorAll('#lora_scripts_samples img').length > 0")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.call(
            "Emulation.setDeviceMetricsOverride", width=1500, height=1900, deviceScaleFactor=1, mobile=False
        )
        browser.evaluate("window.scrollTo(0, 0)")
        browser.screenshot(ARTIFACTS / f"webui-gradio{gradio}.png")
    finally:
        browser.close()
        server.stop()
    lora = root / "models" / "Lora" / "webui_lora.safetensors"
    card = json.loads(lora.with_suffix(".json").read_text())
    assert (
        card["activation text"] == "zkwebui"
        and card["sd version"] == "SD1"
        and card["preferred weight"] == 0.7
    )
    events = (root / "outputs" / "lora-scripts" / "runs" / "webui_lora" / "events.jsonl").read_text()
    assert '"event": "stopped"' in events and '"event": "resumed"' in events
    assert not list((root / "models" / "Lora").glob("webui_lora-step*"))  # the final file replaced it
    calls = server.calls()
    assert "unload_model_weights" in calls and "reload_model_weights" in calls
    refreshed = [c.split(":", 1)[1].split(",") for c in calls if c.startswith("list_available_networks:")]
    assert ["webui_lora"] in refreshed  # `<lora:webui_lora:0.7>` resolves without a restart
    assert "lora_scripts_default_preset" in server.server_log()  # our settings were registered
