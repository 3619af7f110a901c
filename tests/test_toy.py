"""The built-in toy model: it loads like a real checkpoint, prompts steer it, and the quickstart LoRA measurably
learns the zkstyle look (strength 1 > 0.5 > 0 on the style score) without wrecking prompts that lack the trigger."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorascripts.config import load_config
from lorascripts.models import load_base_model
from lorascripts.toy import TOY_MODEL_DIR, TOY_SINGLE_FILE
from lorascripts.toy.evaluate import COLOUR_PROMPTS, colour_problems
from lorascripts.train.sampling import build_pipeline, render
from lorascripts.train.trainer import train

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy(one_cpu_thread):
    return load_base_model(str(TOY_MODEL_DIR))


def test_toy_model_files_and_single_file_agree(toy) -> None:
    size = sum(p.stat().st_size for p in TOY_MODEL_DIR.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"toy model is {size / 2**20:.1f} MiB"
    single = load_base_model(str(TOY_SINGLE_FILE), tokenizer_path=str(TOY_MODEL_DIR / "tokenizer"))
    assert single.family == toy.family and single.resolution == toy.resolution == 64
    for a, b in zip(
        [single.denoiser, single.vae, *single.text_encoders], [toy.denoiser, toy.vae, *toy.text_encoders]
    ):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k].float(), sb[k].float()) for k in sb)


def test_prompts_steer_the_toy_model(toy) -> None:
    pipeline = build_pipeline(toy)
    pipeline.set_progress_bar_config(disable=True)
    images = render(pipeline, list(COLOUR_PROMPTS), seed=3, width=64, height=64, steps=25, guidance_scale=5)
    assert not colour_problems(images)


def test_quickstart_lora_learns_the_style(toy, tmp_path: Path) -> None:
    from lorascripts.toy.evaluate import evaluate_style

    cfg = load_config(
        REPO / "configs" / "quickstart.yaml",
        {"output_dir": str(tmp_path / "out"), "sample_prompts": [], "logging": False, "save_steps": None},
    )
    result = train(cfg)
    report, _ = evaluate_style(toy, result.lora_path)
    print(report.table())
    s0, s05, s1 = report.score_with_trigger
    assert s1 > s0 + 0.05, f"strength 1 moves samples toward the style: {s0:.3f} -> {s1:.3f}"
    assert s0 < s05 < s1, "strength 0.5 lies in between"
    assert report.drift_without_trigger < 0.6 * report.change_with_trigger, (
        "prompts without the trigger stay closer"
    )
