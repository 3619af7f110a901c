"""Rows to tensors: padding, position ids and a block-diagonal causal mask, so packed samples never see each
other (a 4-D boolean mask, which transformers' Llama/Qwen2 attention accepts in eager and SDPA mode)."""

from __future__ import annotations

import random
from typing import Any

import torch

from .data import IGNORE, Encoded, Pack, pack


def as_rows(samples: list[Encoded], max_length: int, packing: bool) -> list[Pack]:
    """Training rows: packed, or one sample per row."""
    if packing and samples:
        # rows as long as the longest sample: attention cost grows with row length, and a longer row would
        # only add more samples that cannot see each other anyway
        return pack(samples, min(max_length, max(len(s.input_ids) for s in samples)))
    return [
        Pack(s.input_ids, [IGNORE] + s.labels[1:], list(range(len(s.input_ids))), [len(s.input_ids)])
        for s in samples
    ]


def collate(rows: list[Pack], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, labels, position_ids (B, T) and a (B, 1, T, T) mask: causal inside each sample only;
    padding positions attend to themselves so no row of the softmax is empty."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)
    for b, row in enumerate(rows):
        n = len(row.input_ids)
        ids[b, :n] = torch.tensor(row.input_ids)
        labels[b, :n] = torch.tensor(row.labels)
        positions[b, :n] = torch.tensor(row.position_ids)
        start = 0
        for length in row.lengths:
            mask[b, start : start + length, start : start + length] = torch.tril(
                torch.ones(length, length, dtype=torch.bool)
            )
            start += length
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask[:, None]}


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder stack, lm_head) of a *ForCausalLM (through a peft wrapper), when the head is a plain projection."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = getattr(base, "model", None), getattr(base, "lm_head", None)
    if decoder is None or head is None or getattr(base.config, "final_logit_softcapping", None):
        return None
    return decoder, head


def labelled_logits(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at every position whose next token is labelled, the (B, T-1) mask of those positions).

    The vocabulary projection runs only where a label is learned (response tokens): with 32k-150k vocabularies
    it is a large share of the compute, and prompt and padding positions never need it.
    """
    keep = batch["labels"][:, 1:] != IGNORE
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask")}
    parts = _decoder_and_head(model)
    if parts is None:
        return model(**inputs).logits[:, :-1][keep], keep
    decoder, head = parts
    hidden = decoder(**inputs).last_hidden_state[:, :-1]
    return head(hidden[keep]), keep


def token_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of next-token cross-entropy over labelled tokens, their count)."""
    logits, keep = labelled_logits(model, batch)
    targets = batch["labels"][:, 1:][keep]
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, int(keep.sum())


def sequence_logps(
    model: Any, batch: dict[str, torch.Tensor], segments: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: (sum of the log-probabilities of its labelled tokens, their count).

    `segments` (B, T) numbers the sequence each token belongs to (packed rows hold several; -1 on padding);
    without it, each row is one sequence."""
    logits, keep = labelled_logits(model, batch)
    targets = batch["labels"][:, 1:][keep]
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]
    if segments is None:
        segments = torch.arange(keep.shape[0], device=keep.device)[:, None].expand(-1, keep.shape[1] + 1)
    owner = segments[:, 1:][keep]  # a label's sequence: packed samples start with an unlabelled token
    count = int(segments.max()) + 1
    sums = torch.zeros(count, device=logits.device).index_add(0, owner, token_logps)
    return sums, torch.zeros(count, dtype=torch.long, device=owner.device).index_add(
        0, owner, torch.ones_like(owner)
    )


def epoch_batches(rows: list[Pack], batch_size: int, seed: int, epoch: int) -> list[list[Pack]]:
    """This epoch's batches, fixed by (seed, epoch) so a resume sees the same ones. Rows are shuffled, then
    sorted by length inside windows of 32 batches, so a batch holds rows of similar length and little padding;
    the batch order is shuffled again."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(rows)))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(rows[i].input_ids), reverse=True)
        batches += [[rows[i] for i in chunk[s : s + batch_size]] for s in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
