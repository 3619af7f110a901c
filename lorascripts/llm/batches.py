"""Rows to tensors: padding, position ids and a block-diagonal causal mask, so packed samples never see each
other (a 4-D boolean mask, which transformers' Llama/Qwen2 attention accepts in eager and SDPA mode)."""

from __future__ import annotations

import random
from typing import Any

import torch

from .data import IGNORE, Encoded, Pack, pack


def as_rows(samples: list[Encoded], max_length: int, packing: bool) -> list[Pack]:
    """Training rows: packed, or one sample per row."""
    if packing:
        return pack(samples, max_length)
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


def token_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of next-token cross-entropy over labelled tokens, their count)."""
    logits = model(
        input_ids=batch["input_ids"],
        position_ids=batch["position_ids"],
        attention_mask=batch["attention_mask"],
    ).logits
    targets = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((targets != IGNORE).sum())


def epoch_order(n_rows: int, seed: int, epoch: int) -> list[int]:
    """A fixed shuffle per epoch (the same after a resume)."""
    order = list(range(n_rows))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order
