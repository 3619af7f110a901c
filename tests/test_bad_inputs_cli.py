"""Bad input, configs and the command lines: every config case of docs/BAD_INPUTS.md, and the real CLIs
(`train.py`, `python -m lorascripts lora ...`, `tools/auto_label.py`, `tools/check_dataset.py`) driven in
subprocesses on a representative set of the corpus: the exit code of the error type, the file named, and never
a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from bad_inputs import BROKEN_IMAGES, good_images, lora_variants
from helpers_train import make_dataset, tiny_config
from safetensors.torch import load_file, save_file
from tiny_captioners import build_tiny_wd14

from lorascripts.config import load_config
from lorascripts.errors import ConfigError
from lorascripts.fileio import file_sha256
from lorascripts.network.lora import LoraNetwork, NetworkSpec
from lorascripts.network.save import save_lora_file

REPO = Path(__file__).resolve().parent.parent
BASE = "base_model: toy\ntrain_data_dir: data\n"
ALIAS_BOMB = (
    "target_modules: ["
    + ", ".join(f"&l{i} [" + ", ".join([f"*l{i - 1}" if i else "q"] * 9) + "]" for i in range(7))
    + "]\n"
)

CONFIGS = {
    "wrong_type": (BASE + "learning_rate: fast\n", r"`learning_rate` must be a number, got 'fast'.*Example"),
    "out_of_range": (BASE + "lora_rank: 0\n", r"`lora_rank` must be at least 1; got 0"),
    "not_finite": (BASE + "learning_rate: .nan\n", r"`learning_rate` must be a finite number"),
    "absurdly_large": (
        BASE + "max_train_steps: 1e300\n",
        r"`max_train_steps` must be at most 100000000; got 1e\+300\.",
    ),
    "unparsable_resolution": (BASE + "resolution: 512xabc\n", r"`resolution` cannot be read from '512xabc'"),
    "unknown_key": (
        BASE + "learnig_rate: 1e-4\n",
        r"unknown key `learnig_rate`. Did you mean `learning_rate`\?",
    ),
    "unknown_choice": (BASE + "optimizer: adamw9\n", r"`optimizer` must be one of .*Did you mean `adamw`\?"),
    "duplicate_key": (BASE + "seed: 1\nseed: 2\n", r"lines 3 and 4: `seed` is set twice"),
    "yaml_syntax": ("base_model: toy\n\ttrain_data_dir: data\n", r"line 2, column 1: not valid YAML"),
    "not_utf8": ((BASE + "trigger_word: café\n").encode("latin-1"), r"is not UTF-8 text"),
    "empty": ("", r"is empty"),
    "a_list": ("- base_model\n- toy\n", r"must be a mapping of `key: value` lines"),
    "missing_resume": (BASE + "resume: /nowhere/checkpoint\n", r"`resume` must be none, auto or an existing"),
    "alias_bomb": (BASE + ALIAS_BOMB, r"`target_modules` must be a list of str"),
    "optimizer_arg_unknown": (
        BASE + "optimizer_args: {betas2: [0.9, 0.99]}\n",
        r"`optimizer_args.betas2` is not an argument of AdamW \(optimizer: adamw\). Did you mean `betas`\?",
    ),
    "optimizer_arg_owned": (
        BASE + "optimizer_args: {lr: 0.1}\n",
        r"`optimizer_args.lr` is set by `learning_rate`",
    ),
    # YAML 1.1 reads 1e-8 (no dot) as text: AdamW's own check refuses it, named as the key
    "optimizer_arg_value": (
        BASE + "optimizer_args: {eps: 1e-8}\n",
        r"`optimizer_args` \{'eps': '1e-8'\} are refused by AdamW",
    ),
    "optimizer_arg_value_checked_in_step": (
        BASE + "optimizer: prodigy\noptimizer_args: {d_coef: x}\n",
        r"`optimizer_args` \{'d_coef': 'x'\} are refused by Prodigy",
    ),
    "lone_surrogate": (BASE + 'trigger_word: "zk\\ud800"\n', r"`trigger_word` holds a lone surrogate escape"),
    "nul_in_a_path": (BASE + 'output_dir: "out\\0put"\n', r"`output_dir` holds a NUL character"),
    "seed_beyond_64_bits": (BASE + "seed: 18446744073709551617\n", r"`seed` must be at most 4294967295"),
    "caption_extension_path": (
        BASE + "caption_extension: ../txt\n",
        r"`caption_extensions` entries must be file suffixes such as \.txt",
    ),
}


def test_caption_extension_without_the_dot_reads_the_sidecars(tmp_path: Path) -> None:
    from lorascripts.data.sources import scan_dataset

    good_images(tmp_path / "data", n=2)
    (tmp_path / "data" / "good_0.txt").write_text("a cat", encoding="utf-8")
    (tmp_path / "data" / "good_1.txt").write_text("a dog", encoding="utf-8")
    (tmp_path / "c.yaml").write_text(BASE + "caption_extension: txt\n", encoding="utf-8")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.caption_extensions == [".txt"]
    found = scan_dataset(tmp_path / "data", caption_extensions=tuple(cfg.caption_extensions))
    assert sorted(item.caption for item in found.items) == ["a cat", "a dog"]


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_config_names_the_file_and_the_key(case: str, tmp_path: Path) -> None:
    text, pattern = CONFIGS[case]
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(ConfigError, match=pattern) as error:
        load_config(path)
    assert str(path) in str(error.value) and len(str(error.value)) < 600


def test_missing_config_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml does not exist. Check the path"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"command line: `resolution` cannot be read"):
        load_config(None, ["base_model=toy", "train_data_dir=d", "resolution=512xabc"])


# --- the real command lines ------------------------------------------------------------------------------------


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.fixture(scope="module")
def lora_files(tiny_sd1, tmp_path_factory) -> dict[str, Path]:
    from lorascripts.models.loader import load_base_model

    folder = tmp_path_factory.mktemp("cli_loras")
    base = load_base_model(str(tiny_sd1.single_file), tokenizer_path=str(tiny_sd1.tokenizer_dir))
    network = LoraNetwork.create(base, NetworkSpec(network_type="lora", rank=4, alpha=2.0))
    good = save_lora_file(folder / "good.safetensors", network.kohya_state_dict(torch.float32), {})
    files = {"good": good}
    for case in ("nan_tensor", "alpha_not_scalar"):
        save_file(
            lora_variants(load_file(str(good)))[case],
            str(files.setdefault(case, folder / f"{case}.safetensors")),
        )
    (files.setdefault("header", folder / "header.safetensors")).write_bytes(b"\xff" * 16)
    return files


TRAIN = ["{repo}/train.py", "--config"]
LORA = ["-m", "lorascripts", "lora"]
# name -> (command line, exit code, strings stderr must contain); the {names} are what _cli_inputs makes
CLI_CASES: dict[str, tuple[list[str], int, list[str]]] = {
    "clip_skip_deeper_than_the_model": (
        [*TRAIN, "ok.yaml", "--set", "clip_skip=3"],
        2,
        ["`clip_skip` is 3", "has only 2 layers"],
    ),
    "merge_checkpoint_onto_itself": (
        [*LORA, "merge", "{good}:0.5", "--checkpoint", "ck.safetensors", "-o", "./ck.safetensors"],
        2,
        ["ck.safetensors is the input", "--overwrite"],
    ),
    "config_unknown_key": ([*TRAIN, "unknown.yaml"], 2, ["unknown.yaml", "learnig_rate", "learning_rate"]),
    "config_missing": ([*TRAIN, "missing.yaml"], 2, ["missing.yaml does not exist"]),
    "override_unparsable": (
        [*TRAIN, "ok.yaml", "--set", "resolution=512xabc"],
        2,
        ["`resolution` cannot be read"],
    ),
    "truncated_image": ([*TRAIN, "ok.yaml", "--set", "train_data_dir={bad_image}"], 3, ["{cut}"]),
    "non_utf8_csv": ([*TRAIN, "ok.yaml", "--set", "train_data_dir={bad_csv}"], 3, ["metadata.csv, line 3"]),
    "nan_initial_lora": ([*TRAIN, "initial.yaml"], 4, ["{nan_tensor}", "NaN"]),
    "lora_merge_damaged": (
        [*LORA, "merge", "{good}", "{alpha_not_scalar}", "-o", "m.safetensors"],
        4,
        ["alpha_not_scalar.safetensors", "alpha has 3 values"],
    ),
    "lora_selftest_header": ([*LORA, "selftest", "{header}"], 4, ["header.safetensors is not a readable"]),
    "lora_inspect_pickle": ([*LORA, "inspect", "{tmp}/x.ckpt"], 4, ["x.ckpt: only .safetensors"]),
    "auto_label_empty": (
        ["{repo}/tools/auto_label.py", "--input", "empty", "--captioner", "wd14", "--model", "{wd14}"],
        3,
        ["empty has no images"],
    ),
    "auto_label_missing_model": (
        ["{repo}/tools/auto_label.py", "--input", "empty", "--model", "./no/model"],
        4,
        ["./no/model does not exist"],
    ),
    "check_dataset_sidecar": (
        ["{repo}/tools/check_dataset.py", "sidecar"],
        3,
        ["good_0.txt, line 1", "not UTF-8"],
    ),
}


def _cli_inputs(tmp: Path, tiny_sd1, loras: dict[str, Path]) -> dict[str, str]:
    """Write the files the cases read (in `tmp`, their working folder); the paths the table names."""
    (tmp / "unknown.yaml").write_text(BASE + "learnig_rate: 1\n", encoding="utf-8")
    (tmp / "ok.yaml").write_text(BASE, encoding="utf-8")
    bad_image = tmp / "bad_image"
    make_dataset(bad_image, n=2)
    cut = BROKEN_IMAGES["truncated_png"](bad_image)
    bad_csv = make_dataset(tmp / "bad_csv", n=2)
    (bad_csv / "metadata.csv").write_bytes(
        "file_name,caption\nimg_00.png,a\nimg_01.png,café\n".encode("cp1252")
    )
    sidecar = tmp / "sidecar"
    good_images(sidecar)
    (sidecar / "good_0.txt").write_bytes(b"caf\xe9")
    (tmp / "empty").mkdir()
    wd14 = build_tiny_wd14(tmp / "wd14")[0]
    data = make_dataset(tmp / "data", n=2)
    nan_cfg = tiny_config(tiny_sd1, data, tmp / "out", initial_lora=str(loras["nan_tensor"]))
    (tmp / "initial.yaml").write_text(yaml.safe_dump(nan_cfg), encoding="utf-8")
    shutil.copyfile(tiny_sd1.single_file, tmp / "ck.safetensors")
    made = {"repo": REPO, "tmp": tmp, "bad_image": bad_image, "cut": cut, "bad_csv": bad_csv, "wd14": wd14}
    return {name: str(path) for name, path in {**made, **loras}.items()}


def _cases(tmp: Path, tiny_sd1, loras: dict[str, Path]) -> dict[str, tuple[list[str], int, list[str]]]:
    """CLI_CASES with the files made and their paths filled in."""
    paths = _cli_inputs(tmp, tiny_sd1, loras)
    return {
        name: ([a.format(**paths) for a in args], code, [n.format(**paths) for n in needles])
        for name, (args, code, needles) in CLI_CASES.items()
    }


def test_command_lines_print_one_clear_error_never_a_traceback(tiny_sd1, lora_files, tmp_path: Path) -> None:
    cases = _cases(tmp_path, tiny_sd1, lora_files)
    checkpoint = file_sha256(tmp_path / "ck.safetensors")
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(cases, pool.map(lambda c: _run(c[0], tmp_path), cases.values())))
    for name, (_, code, needles) in cases.items():
        result = done[name]
        err = result.stderr
        assert "Traceback" not in err and "internal error" not in err, f"{name}:\n{err[-2000:]}"
        assert result.returncode == code, f"{name}: exit {result.returncode}\n{err[-2000:]}"
        assert "error: " in err and all(n in err for n in needles), f"{name}:\n{err[-2000:]}"
    assert not (tmp_path / "m.safetensors").exists() and not list((tmp_path / "out").glob("*.safetensors"))
    assert (
        file_sha256(tmp_path / "ck.safetensors") == checkpoint
    )  # the refused merge left the input as it was


def test_merge_into_the_input_checkpoint_only_with_overwrite(tiny_sd1, lora_files, tmp_path: Path) -> None:
    from lorascripts.cli import main

    checkpoint = tmp_path / "ck.safetensors"
    shutil.copyfile(tiny_sd1.single_file, checkpoint)
    before = file_sha256(checkpoint)
    merge = [
        "lora",
        "merge",
        f"{lora_files['good']}:0.5",
        "--checkpoint",
        str(checkpoint),
        "-o",
        str(checkpoint),
    ]
    assert main(merge) == 2 and file_sha256(checkpoint) == before
    resize = ["lora", "resize", str(lora_files["good"]), "-o", str(lora_files["good"]), "--rank", "2"]
    assert main(resize) == 2
    assert main([*merge, "--overwrite"]) == 0 and file_sha256(checkpoint) != before
    assert checkpoint.stat().st_mode & 0o777 == tiny_sd1.single_file.stat().st_mode & 0o777


def test_inspect_cli_reports_problems_of_a_damaged_file(lora_files, tmp_path: Path) -> None:
    result = _run(["-m", "lorascripts", "lora", "inspect", str(lora_files["nan_tensor"])], tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "PROBLEM" in result.stdout and "NaN/inf" in result.stdout


def test_an_unexpected_exception_is_reported_as_a_bug_not_a_traceback() -> None:
    from lorascripts.cli import internal_error_message

    try:
        {}["missing"]
    except KeyError as exc:
        message = internal_error_message(exc)
    assert message.startswith("internal error: KeyError: 'missing' at test_bad_inputs_cli.py:")
    assert "--debug" in message and "report it" in message and "Traceback" not in message
