"""Config loading: aliases, types, ranges, did-you-mean, YAML errors, overrides, round trip, README reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lorascripts.config import TrainConfig, config_from_dict, dump_config, load_config
from lorascripts.config.reference import BEGIN, END, config_reference_markdown
from lorascripts.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
BASE = {"base_model": "toy", "train_data_dir": "."}


def test_article_keys_work_as_written(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "train_data_dir: .\nmetadata_path: m.csv\nbase_model: runwayml/sd15\nlora_rank: 8\nlora_alpha: 4\n"
        "target_modules: [q_proj, v_proj]\nbatch_size: 2\nepochs: 3\nlearning_rate: 2e-4\noutput_dir: out\n"
        "save_steps: 50\ndropout: 0.1\n",
        encoding="utf-8",
    )
    cfg = load_config(cfg_file)
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.batch_size, cfg.epochs) == (8, 4.0, 2, 3)
    assert cfg.learning_rate == pytest.approx(2e-4)
    assert cfg.target_modules == ["q_proj", "v_proj"] and cfg.save_steps == 50 and cfg.dropout == 0.1


def test_kohya_aliases_and_overrides() -> None:
    cfg = load_config(
        None,
        [
            *(f"{k}={v}" for k, v in BASE.items()),
            "network_dim=4",
            "network_alpha=2",
            "train_batch_size=3",
            "cache_latents=true",
            "resolution=512x768",
            "v_parameterization=true",
        ],
    )
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.batch_size) == (4, 2.0, 3)
    assert cfg.cache_latents == "memory" and cfg.resolution == [512, 768]
    assert cfg.prediction_type == "v_prediction"


def test_override_replaces_alias_spelling_in_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("base_model: toy\ntrain_data_dir: .\nnetwork_dim: 4\n", encoding="utf-8")
    assert load_config(f, ["lora_rank=32"]).lora_rank == 32


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"learnig_rate": 1e-4}, "unknown key `learnig_rate`. Did you mean `learning_rate`?"),
        ({"lora_rank": "abc"}, "`lora_rank` must be an integer, got 'abc'"),
        ({"lora_rank": 0}, "`lora_rank` must be at least 1; got 0"),
        ({"optimizer": "adamww"}, "Did you mean `adamw`?"),
        ({"dropout": 1.5}, "`dropout` must be at most 1.0"),
        ({"resolution": [512, 513]}, "multiples of 8"),
        ({"target_modules": ["q_prj"]}, "Did you mean `q_proj`?"),
        ({"flip_aug": True}, "latents cannot be cached"),
        ({"cache_text_encoder_outputs": "memory", "train_text_encoder": True}, "needs a frozen text encoder"),
        ({"min_bucket_reso": 1024, "max_bucket_reso": 512}, "Swap them"),
        ({"network_dim": 4, "lora_rank": 8}, "mean the same thing"),
        ({"output_name": "a/b"}, "not a valid file name"),
        ({"train_batch_size": None}, "got nothing (null)"),
    ],
)
def test_bad_values_name_key_value_and_fix(extra: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({**BASE, **extra}, source="my.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("my.yaml")


def test_required_keys() -> None:
    with pytest.raises(ConfigError, match="`train_data_dir` is required"):
        config_from_dict({"base_model": "toy"})


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("base_model: toy\ntrain_data_dir: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+"):
        load_config(f)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "e.yaml").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(tmp_path / "e.yaml")


def test_newer_config_version_refused() -> None:
    with pytest.raises(ConfigError, match="newer than this lora-scripts"):
        config_from_dict({**BASE, "config_version": 99})


def test_paths_relative_to_config_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    f = tmp_path / "conf" / "c.yaml"
    f.parent.mkdir()
    f.write_text("base_model: toy\ntrain_data_dir: ../data\n", encoding="utf-8")
    assert Path(load_config(f).train_data_dir).resolve() == (tmp_path / "data").resolve()


def test_dump_round_trip() -> None:
    cfg = config_from_dict(
        {**BASE, "lora_rank": 7, "sample_prompts": ["a, b", "c: d"], "optimizer_args": {"betas": [0.9, 0.99]}}
    )
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert isinstance(cfg, TrainConfig)


def test_every_example_config_is_valid() -> None:
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs, "configs/ has example configs"
    for path in configs:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if raw.get("task", "image") != "image":
            continue
        config_from_dict(raw, source=str(path))


def test_readme_config_reference_is_current() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] + "\n" == config_reference_markdown(), (
        "README config reference is stale: run `python -m lorascripts config-reference --write`"
    )


def test_saved_config_is_written_whole_with_ordinary_permissions(tmp_path: Path) -> None:
    """The resolved `<name>.yaml` beside a LoRA is shared with the LoRA: mode from the umask (it was 0600)."""
    import os
    import stat

    from lorascripts.config import save_config

    cfg = config_from_dict({"base_model": "toy", "train_data_dir": str(tmp_path), "lora_rank": 7})
    path = tmp_path / "out" / "x.yaml"
    old = os.umask(0o022)
    try:
        save_config(cfg, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert load_config(path).lora_rank == 7
    assert [p.name for p in path.parent.iterdir()] == ["x.yaml"]  # no temporary file left
