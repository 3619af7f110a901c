"""Preference tuning (`objective: dpo | orpo`): the losses and the per-batch computation the text-LoRA loop calls.

trl's trainers are not used: DPOTrainer/ORPOTrainer are transformers.Trainer subclasses that own the data
pipeline, the loop and the checkpoints, while this loop must keep its own events/STOP/resume protocol. trl
(1.x) keeps the DPO loss inside `DPOTrainer._compute_loss` and ORPO's in a method, so there is no function to
call; the two formulas below are small, follow trl's definitions (DPO `loss_type="sigmoid"` on summed
log-probs; ORPO's NLL on the chosen answer minus beta * log-sigmoid of the log-odds ratio of the length-averaged
log-probs), and tests/test_llm_preference.py checks them against trl on the same batch.

DPO's reference is the frozen base: the same peft model with the adapter disabled gives its log-probs, so no
second model is held in memory. They are computed once before training (the base never changes).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from .batches import collate, sequence_logps
from .data import IGNORE, Pack, chat_template
from .preference_data import Pair, encode_pair, read_preferences
from .split import train_and_held_out

logger = logging.getLogger(__name__)
OBJECTIVES = ("sft", "dpo", "orpo")


def preference_datasets(cfg: Any, tokenizer: Any) -> tuple[list[Pair], list[Pair]]:
    """Encoded training and held-out pairs (the held-out split by seed unless eval_data is given)."""
    examples, held = train_and_held_out(cfg, read_preferences)
    template = chat_template(tokenizer, cfg.chat_template)
    encoded = [encode_pair(e, tokenizer, cfg.max_seq_length, template) for e in examples]
    held_encoded = [encode_pair(e, tokenizer, cfg.max_seq_length, template) for e in held]
    cut_lines = [pair.line for pair, truncated in encoded + held_encoded if truncated]
    if cut_lines:
        logger.warning(
            "%d preference pairs were cut at max_seq_length=%d (lines %s); raise it or shorten them.",
            len(cut_lines),
            cfg.max_seq_length,
            ", ".join(map(str, cut_lines[:10])),
        )
    return [p for p, _ in encoded], [p for p, _ in held_encoded]


def _pair_rows(pairs: list[Pair], packing: bool) -> tuple[list[Pack], list[list[int]]]:
    """Rows holding the chosen answers (sequences 0..n-1) and the rejected ones (n..2n-1), and which sequences
    each row holds. Packed: first-fit-decreasing into rows as long as the longest sequence, so the batch carries
    little padding (attention stays inside each sequence through collate's block-diagonal mask)."""
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    if not packing:
        return sequences, [[i] for i in range(len(sequences))]
    width = max(len(s.input_ids) for s in sequences)
    rows: list[Pack] = []
    members: list[list[int]] = []
    for index in sorted(range(len(sequences)), key=lambda i: -len(sequences[i].input_ids)):
        seq = sequences[index]
        n = len(seq.input_ids)
        slot = next((r for r, row in enumerate(rows) if len(row.input_ids) + n <= width), None)
        if slot is None:
            rows.append(Pack())
            members.append([])
            slot = len(rows) - 1
        row = rows[slot]
        row.input_ids += seq.input_ids
        row.labels += [IGNORE] + seq.labels[1:]
        row.position_ids += list(range(n))
        row.lengths.append(n)
        members[slot].append(index)
    return rows, members


def _pair_batch(
    pairs: list[Pair], pad_id: int, device: torch.device, packing: bool
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The collated batch and its (B, T) sequence numbers: chosen i -> i, rejected i -> n + i (trl's order)."""
    rows, members = _pair_rows(pairs, packing)
    batch = collate(rows, pad_id)
    segments = torch.full(batch["input_ids"].shape, -1, dtype=torch.long)
    for r, (row, held) in enumerate(zip(rows, members)):
        start = 0
        for length, index in zip(row.lengths, held):
            segments[r, start : start + length] = index
            start += length
    return {k: v.to(device) for k, v in batch.items()}, segments.to(device)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def dpo_losses(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-pair DPO (sigmoid) loss from summed answer log-probs of the policy and the reference."""
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))


def orpo_losses(avg_chosen: torch.Tensor, avg_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-pair ORPO odds-ratio term, -beta * log sigmoid(log odds(chosen) - log odds(rejected)), from
    length-averaged log-probs (the NLL on the chosen answer is added by the caller)."""
    log_odds = (avg_chosen - avg_rejected) - (log1mexp(avg_chosen) - log1mexp(avg_rejected))
    return -beta * F.logsigmoid(log_odds)


@torch.no_grad()
def attach_reference(
    model: Any, pairs: list[Pair], pad_id: int, batch_size: int, autocast: Any, packing: bool = True
) -> None:
    """Store the frozen base's summed answer log-probs on every pair (the adapter disabled, eval mode)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with model.disable_adapter():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                sums, _ = sequence_logps(model, *_pair_batch(chunk, pad_id, device, packing))
            chosen, rejected = sums.float().cpu().chunk(2)
            for pair, c, r in zip(chunk, chosen.tolist(), rejected.tolist()):
                pair.reference = (c, r)
    model.train(was_training)


def pair_loss(
    model: Any, pairs: list[Pair], objective: str, beta: float, pad_id: int, packing: bool = True
) -> tuple[torch.Tensor, dict[str, float]]:
    """(the objective's loss summed over the pairs, metrics): `margin` is the mean summed log-prob of the chosen
    answer minus the rejected one under the policy, `accuracy` the share of pairs where chosen wins (for DPO, by
    the implicit reward beta * (policy - reference))."""
    device = next(model.parameters()).device
    sums, counts = sequence_logps(model, *_pair_batch(pairs, pad_id, device, packing))
    chosen, rejected = sums.chunk(2)
    chosen_count, rejected_count = counts.chunk(2)
    if objective == "dpo":
        ref = torch.tensor([p.reference for p in pairs], device=device, dtype=chosen.dtype)
        losses = dpo_losses(chosen, rejected, ref[:, 0], ref[:, 1], beta)
        won = (chosen - ref[:, 0]) > (rejected - ref[:, 1])
    else:
        avg_chosen, avg_rejected = chosen / chosen_count.clamp(min=1), rejected / rejected_count.clamp(min=1)
        nll = -chosen.sum() / chosen_count.sum().clamp(min=1)
        losses = orpo_losses(avg_chosen, avg_rejected, beta) + nll
        won = avg_chosen > avg_rejected
    metrics = {
        "margin": float((chosen - rejected).detach().mean()),
        "accuracy": float(won.float().mean()),
    }
    return losses.sum(), metrics
