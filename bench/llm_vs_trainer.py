"""Text-LoRA throughput: lora-scripts' trainer vs a plain transformers Trainer + peft run.

Same model (a Llama-architecture model built from a config, random weights, a Llama-2-sized 32000-row
vocabulary by default — the output projection is a large share of a real LM's compute), same data (JSONL prompt/response
pairs of varied length), same LoRA (r=16, all-linear), same sequence length, batch size and steps. The baseline
pads each batch to its longest sample (DataCollatorForSeq2Seq, what the Trainer examples use); lora-scripts packs
short samples. Each side runs in its own process; reported: trained (non-padding) tokens per second, and peak
resident memory (CPU) or peak CUDA memory.

    python bench/llm_vs_trainer.py [--steps 30] [--hidden 512] [--layers 4] [--samples 400]
    python bench/llm_vs_trainer.py --objective dpo   # ours (DPO, frozen base as reference) vs trl's DPOTrainer

With --objective dpo the data are prompt/chosen/rejected pairs and the baseline is trl's DPOTrainer + peft
(its reference log-probs precomputed too, as ours are); the time of both includes computing them.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_assets(folder: Path, hidden: int, layers: int, samples: int, vocab: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_llm import build_tokenizer  # noqa: E402 - test helper: tokenizer trained locally, chat template

    rng = random.Random(0)
    words = "the a water town canal bridge lantern mist stone boat willow rain tea market lane roof".split()
    pairs = []
    for _ in range(samples):
        prompt = " ".join(rng.choices(words, k=rng.randint(4, 20)))
        response = " ".join(rng.choices(words, k=rng.randint(8, 180)))
        pairs.append({"prompt": prompt, "response": response})
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    prefs = [
        {
            "prompt": p["prompt"],
            "chosen": p["response"],
            "rejected": " ".join(rng.choices(words, k=rng.randint(8, 180))),
        }
        for p in pairs
    ]
    (folder / "prefs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prefs), encoding="utf-8")
    tok = build_tokenizer(
        folder / "tok", [p["prompt"] + " " + p["response"] for p in pairs[:200]], vocab_size=2000
    )
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tok))
    config = LlamaConfig(
        vocab_size=max(vocab, len(tokenizer)),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(folder / "model"))
    tokenizer.save_pretrained(str(folder / "model"))
    return folder / "model", data


def run_ours(
    model: Path,
    data: Path,
    out: Path,
    steps: int,
    batch: int,
    seq: int,
    packing: bool = True,
    objective: str = "sft",
) -> dict:
    from lorascripts.config import config_from_dict
    from lorascripts.llm.train import train_llm

    cfg = config_from_dict(
        {
            "task": "llm",
            "base_model": str(model),
            "train_data": str(data),
            "output_dir": str(out),
            "lora_rank": 16,
            "lora_alpha": 32,
            "batch_size": batch,
            "max_seq_length": seq,
            "max_train_steps": steps,
            "eval_split": 0,
            "logging": False,
            "mixed_precision": "no",
            "lr_scheduler": "constant",
            "packing": packing,
            "objective": objective,
        }
    )
    events: list[dict] = []
    train_llm(cfg, callbacks=[events.append])
    started = next(e for e in events if e["event"] == "started")
    last = [e for e in events if e["event"] == "step"][-1]
    return {"seconds": last["time"] - started["time"] + started["reference_s"], "tokens": last["tokens_seen"]}


def _trainer_args(out: Path, steps: int, batch: int) -> dict:
    """The baselines' transformers TrainingArguments (DPOConfig extends them)."""
    import torch

    return {
        "output_dir": str(out),
        "per_device_train_batch_size": batch,
        "max_steps": steps,
        "learning_rate": 2e-4,
        "lr_scheduler_type": "constant",
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
        "seed": 42,
    }


def run_trl_dpo(model: Path, data: Path, out: Path, steps: int, batch: int, seq: int) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from datasets import Dataset

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    rows = []
    for line in data.read_text(encoding="utf-8").splitlines():
        pair = json.loads(line)
        rows.append(
            {
                "prompt": [{"role": "user", "content": pair["prompt"]}],
                "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                "rejected": [{"role": "assistant", "content": pair["rejected"]}],
            }
        )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    lm = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model)), lora)
    args = DPOConfig(**_trainer_args(out, steps, batch), max_length=seq, precompute_ref_log_probs=True)
    trainer = DPOTrainer(
        model=lm, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    counted = {"tokens": 0}
    collate = trainer.data_collator

    def counting(features):  # noqa: ANN001, ANN202
        batch_ = collate(features)
        counted["tokens"] += int(batch_["attention_mask"].sum())
        return batch_

    trainer.data_collator = counting
    started = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - started, "tokens": counted["tokens"]}


def run_baseline(model: Path, data: Path, out: Path, steps: int, batch: int, seq: int) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    rows = []
    for line in data.read_text(encoding="utf-8").splitlines():
        pair = json.loads(line)
        messages = [{"role": "user", "content": pair["prompt"]}]
        prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": pair["response"]}], tokenize=False
        )
        p_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:seq]
        rows.append({"input_ids": ids, "labels": ([-100] * len(p_ids) + ids[len(p_ids) :])[:seq]})
    lm = AutoModelForCausalLM.from_pretrained(str(model))
    lm = get_peft_model(
        lm,
        LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    counted = {"tokens": 0}

    class Counting(DataCollatorForSeq2Seq):
        def __call__(self, features, return_tensors=None):  # noqa: ANN001, ANN204
            batch_ = super().__call__(features, return_tensors)
            counted["tokens"] += int((batch_["attention_mask"]).sum())
            return batch_

    args = TrainingArguments(**_trainer_args(out, steps, batch))
    trainer = Trainer(
        model=lm, args=args, train_dataset=rows, data_collator=Counting(tokenizer, padding=True)
    )
    started = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - started, "tokens": counted["tokens"]}


def _peak() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    paths = (Path(args.model), Path(args.data), Path(args.out), args.steps, args.batch, args.seq)
    if args.side == "baseline":
        result = run_trl_dpo(*paths) if args.objective == "dpo" else run_baseline(*paths)
    else:
        result = run_ours(*paths, packing=args.side == "ours", objective=args.objective)
    result["peak_mb"] = _peak()
    print("RESULT " + json.dumps(result))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument(
        "--vocab",
        type=int,
        default=32000,
        help="embedding rows (Llama 2: 32000; unused ids above the tokenizer's)",
    )
    parser.add_argument("--objective", choices=["sft", "dpo"], default="sft", help="dpo: vs trl's DPOTrainer")
    parser.add_argument("--side", choices=["ours", "ours-unpacked", "baseline"])
    parser.add_argument("--sides", default="baseline,ours", help="which runs to compare (also ours-unpacked)")
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--out")
    return parser


def _run_side(side: str, args: argparse.Namespace, model: Path, data: Path, out: Path) -> dict:
    """One side in its own process (peak memory is per process); its RESULT line."""
    cmd = [sys.executable, __file__, "--side", side, "--model", str(model), "--data", str(data)]
    cmd += ["--objective", args.objective, "--out", str(out)]
    cmd += ["--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
    if done.returncode:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


def _print_results(results: dict[str, dict], objective: str) -> None:
    for side, r in results.items():
        print(
            f"{side:9} {r['tokens'] / r['seconds']:9.0f} tokens/s  ({r['tokens']} tokens in {r['seconds']:.1f} s)  peak {r['peak_mb']:.0f} MB"
        )
    if "ours" in results and "baseline" in results:
        rate = {k: r["tokens"] / r["seconds"] for k, r in results.items()}
        print(
            f"ratio (ours / {'Trainer' if objective == 'sft' else 'trl DPOTrainer'}+peft, {objective}): "
            f"{rate['ours'] / rate['baseline']:.2f}x trained tokens per second (goal >= 1.5x)"
        )


def main() -> None:
    args = _parser().parse_args()
    if args.side:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        model, data = make_assets(Path(tmp), args.hidden, args.layers, args.samples, args.vocab)
        if args.objective != "sft":
            data = data.parent / "prefs.jsonl"
        results = {
            side: _run_side(side, args, model, data, Path(tmp) / side) for side in args.sides.split(",")
        }
    _print_results(results, args.objective)


if __name__ == "__main__":
    main()
