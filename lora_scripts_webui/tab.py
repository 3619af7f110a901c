"""The "LoRA Training" tab: gradio wiring only (what the buttons do lives in actions.py and session.py).

Written for both gradio 3.41 (AUTOMATIC1111 1.x) and gradio 4.x (Forge): only components, arguments and
events that both versions accept (no `.style()`, no `gr.Timer`, `gr.update` for partial updates).
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from lorascripts.caption.prompts import PRESETS as CAPTION_PRESETS
from lorascripts.host.charts import loss_chart
from lorascripts.host.form import CHOICE_BY_NAME, FIELD_BY_NAME, FormField
from lorascripts.host.parts import AUTOMATIC, part_fields
from lorascripts.host.presets import PRESET_CHOICES, PRESETS

from . import hooks
from .actions import (
    CAPTION_MODES,
    CAPTIONERS,
    TrainForm,
    UserError,
    build_config,
    caption_now,
    load_table,
    save_table,
)
from .session import Snapshot, TrainingSession

logger = logging.getLogger(__name__)
SESSION = TrainingSession()
POLL_SECONDS = 1.0
# elem_ids the browser tests and users' scripts address (kept from before the fields came from host/form.py)
ELEM = {n: n for n in ("rank", "alpha", "steps", "resolution")} | {
    "learning_rate": "lr",
    "batch_size": "batch",
}


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_html(snap: Snapshot) -> str:
    """A progress bar with step, loss, speed and ETA."""
    if snap.state == "idle":
        return "<div class='lora-scripts-progress'>Not training.</div>"
    loss = f" · loss {snap.losses[-1][1]:.4f}" if snap.losses else ""
    speed = f" · {snap.it_per_s:.2f} it/s" if snap.it_per_s else ""
    eta = f" · ETA {_clock(snap.eta_s)}" if snap.running else ""
    estimate = (
        f"<div class='lora-scripts-estimate'>{html.escape(snap.estimate)}</div>" if snap.estimate else ""
    )
    return (
        f"<div class='lora-scripts-progress' data-state='{snap.state}' data-step='{snap.step}'>"
        f"<progress value='{snap.step}' max='{max(1, snap.total)}' style='width:100%'></progress>"
        f"<div>{html.escape(snap.state)}: step {snap.step}/{snap.total}{loss}{speed}{eta}</div>"
        f"{estimate}</div>"
    )


def _samples(paths: list[str]) -> list[Any]:
    from PIL import Image

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except OSError:
            continue  # a sample still being written shows on the next poll
    return images


def _follow(note: str = "") -> Iterator[tuple]:
    """Yield (progress, status, loss chart, samples) once a second until the run ends."""
    shown_losses, shown_samples = -1, None
    while True:
        snap = SESSION.snapshot()
        points = len(snap.losses) + len(snap.validation)
        chart = loss_chart(snap.losses, validation=snap.validation) if points != shown_losses else gr.update()
        gallery = _samples(snap.samples) if snap.samples != shown_samples else gr.update()
        shown_losses, shown_samples = points, snap.samples
        message = "\n".join(m for m in (note, snap.message) if m)
        yield progress_html(snap), message, chart, gallery
        if not snap.running:
            return
        time.sleep(POLL_SECONDS)


def on_train(*fields: Any) -> Iterator[tuple]:
    """Train button: validate, start the child process, then stream progress (attaches to a running run)."""
    *form_fields, unload = fields
    if SESSION.snapshot().running:
        yield from _follow("A run is already going; showing its progress.")
        return
    keys = [spec.key for spec in part_fields()]  # the part lists come last (_dit_section)
    split = len(form_fields) - len(keys)
    try:
        form = TrainForm(*form_fields[:split], parts=dict(zip(keys, form_fields[split:], strict=True)))
        config = build_config(form)
        SESSION.start(config, form.lora_name, unload_model=bool(unload))
    except (UserError, ValueError, RuntimeError) as exc:
        yield progress_html(SESSION.snapshot()), f"Not started: {exc}", gr.update(), gr.update()
        return
    yield from _follow()


def on_stop() -> str:
    return "Stopping: a checkpoint is being saved." if SESSION.request_stop() else "Nothing is training."


def _guarded(fn: Any) -> Any:
    """Show a UserError in the dataset status line instead of a stack trace."""

    def run(*args: Any) -> Any:
        try:
            return fn(*args)
        except UserError as exc:
            return gr.update(), str(exc)

    return run


def _save(folder: str, table: Any) -> str:
    try:
        return save_table(folder, table)
    except UserError as exc:
        return str(exc)


PRESET_FIELDS = ("rank", "alpha", "learning_rate")  # the fields a preset fills when chosen


def _preset_values(name: str) -> tuple:
    if name not in PRESETS:  # custom: the user's own values stay
        return tuple(gr.update() for _ in PRESET_FIELDS)
    return tuple(FIELD_BY_NAME[f].shown(name) for f in PRESET_FIELDS)


def _part_choices(kind: str) -> list[str]:
    return [AUTOMATIC, *hooks.part_files(kind)]


def _refresh_checkpoints() -> tuple:
    titles = list(hooks.refresh_checkpoints())
    parts = (gr.update(choices=_part_choices(spec.kind)) for spec in part_fields())
    return (gr.update(choices=titles, value=hooks.current_checkpoint()), *parts)


def _dit_section() -> dict[str, Any]:
    """Diffusion transformers (FLUX.1, Z-Image, ...): the memory preset and one list per part file the families
    take."""
    c: dict[str, Any] = {}
    memory = CHOICE_BY_NAME["memory_preset"]
    families = ", ".join(dict.fromkeys(family for spec in part_fields() for family, _ in spec.uses))
    with gr.Accordion(f"Diffusion transformers ({families}): memory and part files", open=False):
        c["memory_preset"] = gr.Dropdown(
            memory.choices,
            value=memory.default,
            label=f"{memory.label} ({', '.join(memory.choices[2:])}: a published recipe for the card's memory)",
            info=memory.tooltip,
            elem_id="lora_scripts_memory_preset",
        )
        for spec in part_fields():
            c[spec.key] = gr.Dropdown(
                _part_choices(spec.kind),
                value=AUTOMATIC,
                label=spec.label,
                info=spec.tooltip,
                allow_custom_value=True,
                elem_id=f"lora_scripts_{spec.key}",
            )
    return c


def _dataset_section() -> dict[str, Any]:
    c: dict[str, Any] = {}
    gr.Markdown("### 1. Images and captions")
    with gr.Row():
        c["dataset"] = gr.Textbox(
            label="Dataset folder", placeholder="/path/to/images", elem_id="lora_scripts_dataset"
        )
        c["load"] = gr.Button("Load", scale=0, min_width=100, elem_id="lora_scripts_load")
    with gr.Row():
        c["captioner"] = gr.Dropdown(
            CAPTIONERS, value="wd14", label="Captioner", elem_id="lora_scripts_captioner"
        )
        c["caption_model"] = gr.Textbox(
            label="Captioning model (folder or Hugging Face id; empty: the default)",
            elem_id="lora_scripts_caption_model",
        )
        c["trigger"] = gr.Textbox(label="Trigger word", elem_id="lora_scripts_trigger")
        c["mode"] = gr.Dropdown(CAPTION_MODES, value="skip_existing", label="Existing captions")
        c["caption_preset"] = gr.Dropdown(
            list(CAPTION_PRESETS),
            value="long",
            label="Ask for (qwen-vl, joycaption)",
            elem_id="lora_scripts_preset",
        )
    c["caption"] = gr.Button("Caption now", elem_id="lora_scripts_caption")
    c["table"] = gr.Dataframe(
        headers=["file", "caption"],
        datatype=["str", "str"],
        col_count=(2, "fixed"),
        type="array",
        interactive=True,
        label="Captions (edit, then Save captions)",
        elem_id="lora_scripts_captions",
    )
    with gr.Row():
        c["save"] = gr.Button("Save captions", elem_id="lora_scripts_save")
        c["dataset_status"] = gr.Textbox(
            label="Dataset", interactive=False, elem_id="lora_scripts_dataset_status"
        )
    return c


def _number(spec: FormField, preset: str) -> Any:
    """A form field of host/form.py: its value for the preset, its label and what 0 means."""
    label = f"{spec.label} (0: {spec.zero.split(' (')[0]})" if spec.zero else spec.label
    if spec.name == "preferred_weight":
        return gr.Slider(
            0.0,
            spec.maximum,
            value=spec.shown(preset),
            step=spec.step,
            label=f"{label} (Lora card)",
            elem_id="lora_scripts_weight",
        )
    precision = 0 if spec.kind is int else None
    return gr.Number(
        value=spec.shown(preset), precision=precision, label=label, elem_id=f"lora_scripts_{ELEM[spec.name]}"
    )


def _train_section() -> dict[str, Any]:
    c: dict[str, Any] = {}
    gr.Markdown("### 2. Train")
    with gr.Row():
        c["checkpoint"] = gr.Dropdown(
            list(hooks.checkpoints()),
            value=hooks.current_checkpoint(),
            label="Base model",
            allow_custom_value=True,
            elem_id="lora_scripts_checkpoint",
        )
        c["refresh"] = gr.Button("Refresh", scale=0, min_width=100, elem_id="lora_scripts_refresh")
    preset = hooks.option("lora_scripts_default_preset", "style")
    c["lora_name"] = gr.Textbox(value="my_lora", label="LoRA name", elem_id="lora_scripts_name")
    c["preset"] = gr.Dropdown(
        list(PRESET_CHOICES), value=preset, label="Preset", elem_id="lora_scripts_preset"
    )
    for row in (("rank", "alpha", "steps"), ("learning_rate", "resolution", "batch_size")):
        with gr.Row():
            for name in row:
                c[name] = _number(FIELD_BY_NAME[name], preset)
    c["preferred_weight"] = _number(FIELD_BY_NAME["preferred_weight"], preset)
    c["sample_prompt"] = gr.Textbox(
        label="Sample prompt (rendered during training)", elem_id="lora_scripts_sample"
    )
    c.update(_dit_section())
    c["unload"] = gr.Checkbox(value=True, label="Unload the WebUI's model while training (frees GPU memory)")
    with gr.Accordion("Advanced YAML (any config key, see the README)", open=False):
        c["advanced"] = gr.Textbox(lines=6, label="key: value lines", elem_id="lora_scripts_advanced")
    with gr.Row():
        c["train"] = gr.Button("Train", variant="primary", elem_id="lora_scripts_train")
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="lora_scripts_stop")
    c["progress"] = gr.HTML(progress_html(SESSION.snapshot()), elem_id="lora_scripts_progress")
    c["status"] = gr.Textbox(label="Status", lines=3, interactive=False, elem_id="lora_scripts_status")
    c["loss"] = gr.Image(label="Loss", type="pil", interactive=False, elem_id="lora_scripts_loss")
    c["samples"] = gr.Gallery(label="Samples", columns=4, elem_id="lora_scripts_samples")
    return c


def build_tab() -> gr.Blocks:
    """The tab's Blocks, wired to actions and the training session."""
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row():
            with gr.Column(scale=3):
                d = _dataset_section()
            with gr.Column(scale=2):
                t = _train_section()
        table_out = [d["table"], d["dataset_status"]]
        d["load"].click(_guarded(load_table), [d["dataset"]], table_out)
        d["caption"].click(
            _guarded(caption_now),
            [d["dataset"], d["captioner"], d["caption_model"], d["trigger"], d["mode"], d["caption_preset"]],
            table_out,
        )
        d["save"].click(_save, [d["dataset"], d["table"]], [d["dataset_status"]])
        t["preset"].change(_preset_values, [t["preset"]], [t[f] for f in PRESET_FIELDS])
        parts = [t[spec.key] for spec in part_fields()]
        t["refresh"].click(_refresh_checkpoints, None, [t["checkpoint"], *parts])
        numbers = ["rank", "alpha", "steps", "learning_rate", "resolution", "batch_size"]
        form = [d["dataset"], t["checkpoint"], t["lora_name"], t["preset"], *(t[n] for n in numbers)]
        form += [d["trigger"], t["preferred_weight"], t["sample_prompt"], t["advanced"], t["memory_preset"]]
        outputs = [t["progress"], t["status"], t["loss"], t["samples"]]
        t["train"].click(on_train, form + parts + [t["unload"]], outputs)
        t["stop"].click(on_stop, None, [t["status"]], queue=False)
    return tab


def on_ui_tabs() -> list[tuple[gr.Blocks, str, str]]:
    """script_callbacks.on_ui_tabs: one tab."""
    return [(build_tab(), "LoRA Training", "lora_scripts")]


def on_ui_settings() -> None:
    hooks.register_settings()
