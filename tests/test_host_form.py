"""The one form -> config step both hosts use (lorascripts/host/form.py): defaults from the schema and presets,
untouched fields leave the preset in charge, relative paths resolve the same in the host and the training child.
The ComfyUI node and the WebUI tab are checked against the same table in test_comfyui.py / test_webui.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers_train import make_dataset

from lorascripts.config import TrainConfig, load_config
from lorascripts.errors import ConfigError
from lorascripts.host.engine_env import PACKAGE_ROOT
from lorascripts.host.form import FIELDS, HostForm, RequestRoots, form_config, form_defaults
from lorascripts.host.jobs import TrainingJob
from lorascripts.host.presets import PRESET_CHOICES, PRESETS


def _form(tmp_path: Path, **changes) -> HostForm:
    data = tmp_path / "data"
    if not data.is_dir():
        make_dataset(data, n=2, size=32)
    form = HostForm(
        base_model="toy", dataset=str(data), paths_base=tmp_path, output_dir=str(tmp_path / "out")
    )
    return dataclasses.replace(form, **changes)


def _schema(key: str):
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == key)
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def test_defaults_are_the_presets_then_the_schemas(tmp_path: Path) -> None:
    node_untouched = {f.name: f.node_default for f in FIELDS if f.in_node}
    for preset in PRESET_CHOICES:
        for spec in FIELDS:  # what a form shows: the preset's value, else the schema's (0 for "unset")
            expected = PRESETS.get(preset, {}).get(spec.key, _schema(spec.key))
            assert spec.shown(preset) == (expected if expected not in (None, []) else 0), (preset, spec.key)
        shown = {f.name: f.shown(preset) for f in FIELDS}  # the WebUI tab sends what it shows
        for values in (node_untouched, shown, {}):  # ... ComfyUI its widget defaults; a script nothing
            cfg = form_config(_form(tmp_path, preset=preset, values=values))
            for key, value in form_defaults(preset).items():
                assert getattr(cfg, key) == (value or _schema(key)), (preset, key, values)
            assert all(getattr(cfg, k) == v for k, v in PRESETS.get(preset, {}).items())
    # the numbers that have no "unset" meaning default to the schema's value on the node as well
    assert {f.key: f.node_default for f in FIELDS if not f.zero} == {
        f.key: _schema(f.key) for f in FIELDS if not f.zero
    }
    assert form_defaults("style")["lora_alpha"] == 8 and form_defaults("custom")["lora_alpha"] == 16


def test_character_preset_with_untouched_widgets_trains_at_its_rank(tmp_path: Path) -> None:
    """The ComfyUI node sends every widget: its untouched defaults must leave the character preset's rank 32."""
    untouched = {f.name: f.node_default for f in FIELDS if f.in_node}
    for values, rank in ((untouched, 32), ({**untouched, "rank": 24}, 24)):
        cfg = form_config(_form(tmp_path, preset="character", values=values))
        job = TrainingJob(cfg, tmp_path / "runs" / "c", tmp_path / "loras", "c")
        written = load_config(job.write_config())  # what the training child reads
        assert (written.lora_rank, written.lora_alpha, written.epochs, written.keep_tokens) == (
            rank,
            16,
            12,
            1,
        )
        assert written.output_dir == str(tmp_path / "runs" / "c") and written.resume == "auto"


def test_relative_paths_resolve_from_the_host_root_in_parent_and_child(tmp_path: Path, monkeypatch) -> None:
    root, decoy = tmp_path / "host", tmp_path / "cwd"
    for folder in (root, decoy):
        (folder / "models" / "loras").mkdir(parents=True)
        (folder / "models" / "loras" / "x.safetensors").write_bytes(b"{}")
    held_out = make_dataset(root / "held_out", n=2, size=32)
    monkeypatch.chdir(decoy)  # the host's working folder holds a file of the same name: it must not win
    advanced = "initial_lora: models/loras/x.safetensors\nvalidation_dir: held_out\ncache_dir: ~/cache"
    cfg = form_config(_form(tmp_path, paths_base=root, advanced_yaml=advanced))
    assert cfg.initial_lora == str(root / "models" / "loras" / "x.safetensors")
    assert cfg.validation_dir == str(held_out) and cfg.cache_dir == str(Path.home() / "cache")
    path = TrainingJob(cfg, tmp_path / "runs" / "r", tmp_path / "loras", "r").write_config()
    monkeypatch.chdir(PACKAGE_ROOT)  # the training child's working folder
    child = load_config(path)
    assert (child.initial_lora, child.validation_dir) == (cfg.initial_lora, cfg.validation_dir)


def test_bad_forms_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="advanced YAML must be `key: value`"):
        form_config(_form(tmp_path, advanced_yaml="- a list"))
    with pytest.raises(ConfigError, match="lora_rnak"):
        form_config(_form(tmp_path, advanced_yaml="lora_rnak: 4"))
    with pytest.raises(ConfigError, match="unknown form fields"):
        form_config(_form(tmp_path, values={"rnak": 4}))
    with pytest.raises(ConfigError, match="Rank must be a number, got 'many'"):
        form_config(_form(tmp_path, values={"rank": "many"}))
    with pytest.raises(ConfigError, match="unknown preset 'charcter'; choose one of style, character"):
        form_config(_form(tmp_path, preset="charcter"))
    with pytest.raises(ConfigError, match="trains image LoRAs"):
        form_config(_form(tmp_path, advanced_yaml="task: llm\ndata_path: x.jsonl"))
    roots = RequestRoots([tmp_path / "data"], [tmp_path / "out"])
    with pytest.raises(ConfigError, match="initial_lora"):  # a network-facing host keeps paths in its folders
        form_config(_form(tmp_path, roots=roots, advanced_yaml="initial_lora: ../elsewhere/x.safetensors"))
    with pytest.raises(ConfigError, match="mean the same thing"):  # an alias cannot swap the base model
        form_config(_form(tmp_path, roots=roots, advanced_yaml="pretrained_model_name_or_path: other"))


def test_memory_preset_and_part_files_reach_the_config(tmp_path: Path) -> None:
    """The list choices and part files both hosts show: what is chosen is the config's, automatic is unset, and
    the part lists are every registered family's `components`, keyed as the config names them."""
    from lorascripts.config.schema import COMPONENT_KEYS
    from lorascripts.host.form import CHOICE_BY_NAME
    from lorascripts.host.parts import AUTOMATIC, part_fields
    from lorascripts.models.families import all_families

    taken = {key: f.components[key] for f in all_families() for key in f.components}
    fields = part_fields()
    assert [p.key for p in fields] == [k for k in COMPONENT_KEYS if k in taken]  # the schema's order
    for spec in fields:
        assert all(
            f"{f.label}: {f.components[spec.key]}" in spec.tooltip
            for f in all_families()
            if spec.key in f.components
        )
    assert {p.key: p.kind for p in fields}["vae"] == "vae" and fields[-1].kind == "text_encoder"
    vae = tmp_path / "ae.safetensors"
    vae.write_bytes(b"{}")
    parts = {"vae": str(vae), "text_encoder": AUTOMATIC, "text_encoder_2": None}
    cfg = form_config(_form(tmp_path, choices={"memory_preset": "12gb"}, parts=parts))
    assert (cfg.memory_preset, cfg.vae, cfg.text_encoder, cfg.text_encoder_2) == (
        "12gb",
        str(vae),
        None,
        None,
    )
    assert form_config(_form(tmp_path)).memory_preset == CHOICE_BY_NAME["memory_preset"].default == "off"
    memory = CHOICE_BY_NAME["memory_preset"]
    assert memory.choices[:3] == ["off", "auto", "24gb"] and "SD1/SD2/SDXL" in memory.tooltip
    with pytest.raises(ConfigError, match="memory_preset"):
        form_config(_form(tmp_path, choices={"memory_preset": "6gb"}))
    with pytest.raises(ConfigError, match="unknown form choices"):
        form_config(_form(tmp_path, choices={"memory": "auto"}))
    with pytest.raises(ConfigError, match="unknown part files"):
        form_config(_form(tmp_path, parts={"vea": str(vae)}))
    roots = RequestRoots([tmp_path / "data"], [tmp_path / "out"])
    with pytest.raises(ConfigError, match="vae"):  # a network-facing host reads part files inside its folders
        form_config(_form(tmp_path, roots=roots, parts={"vae": str(vae)}))
