"""Preference data (`objective: dpo | orpo`): JSONL pairs of a preferred and a rejected answer to one prompt.

Accepted lines (detected per line):
- `{"prompt": "...", "chosen": "...", "rejected": "...", "system"?: "..."}`
- `{"prompt": [messages], "chosen": [assistant message] | "...", "rejected": ...}` (trl's conversational form)
- `{"messages": [messages before the answer], "chosen": "...", "rejected": "..."}`
- `{"chosen": [whole conversation], "rejected": [whole conversation]}` (the shared turns are the prompt)

Each answer is rendered with the same chat template as SFT; the completion is what the template adds after the
prompt with its generation prompt (as trl does), and only those tokens count in the log-probabilities.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .data import IGNORE, MAX_REPORTED, ROLES, Pack, _render

logger = logging.getLogger(__name__)


@dataclass
class PreferenceExample:
    """A prompt (chat messages) with the preferred and the rejected answer."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    line: int


@dataclass
class Pair:
    """One encoded preference pair: two unpacked rows, and the reference log-probs once computed."""

    chosen: Pack
    rejected: Pack
    line: int
    reference: tuple[float, float] | None = None

    @property
    def input_ids(self) -> list[int]:
        """Every token of the pair (batching sorts by this length; throughput counts it)."""
        return self.chosen.input_ids + self.rejected.input_ids


def _checked_messages(value: Any, what: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"`{what}` must be a non-empty list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"`{what}` message {i + 1} needs role (system/user/assistant) and content text")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _answer(value: Any, what: str) -> str:
    """An answer given as text or as a one-message assistant list."""
    if isinstance(value, list):
        messages = _checked_messages(value, what)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise ValueError(f"`{what}` as a list must hold exactly one assistant message")
        value = messages[0]["content"]
    if not isinstance(value, str) or not value:
        raise ValueError(f"`{what}` must be non-empty text")
    return value


def _split_conversations(chosen: Any, rejected: Any) -> tuple[list[dict[str, str]], str, str]:
    """Whole conversations that differ only in the last (assistant) turn -> (prompt, chosen, rejected)."""
    a, b = _checked_messages(chosen, "chosen"), _checked_messages(rejected, "rejected")
    if a[:-1] != b[:-1] or a[-1]["role"] != "assistant" or b[-1]["role"] != "assistant":
        raise ValueError(
            "whole `chosen`/`rejected` conversations must share every turn but a last assistant one"
        )
    if len(a) < 2:
        raise ValueError("the conversations need a prompt before the answer")
    return a[:-1], _answer(a[-1]["content"], "chosen"), _answer(b[-1]["content"], "rejected")


def parse_preference(row: Any) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, chosen, rejected) of one JSON line, or a ValueError saying what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "chosen" not in row or "rejected" not in row:
        raise ValueError(f"a preference line needs `chosen` and `rejected` (keys: {sorted(row)})")
    if "prompt" not in row and "messages" not in row:
        return _split_conversations(row["chosen"], row["rejected"])
    prompt = row.get("prompt", row.get("messages"))
    if isinstance(prompt, str):
        system = row.get("system")
        messages = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
        messages.append({"role": "user", "content": prompt})
    else:
        messages = _checked_messages(prompt, "prompt" if "prompt" in row else "messages")
    if messages[-1]["role"] == "assistant":
        raise ValueError("the prompt must end before the answer (its last message is the assistant's)")
    return messages, _answer(row["chosen"], "chosen"), _answer(row["rejected"], "rejected")


def read_preferences(path: Path, on_error: str = "error") -> list[PreferenceExample]:
    """Every preference pair in a JSONL file; bad lines are named with their numbers (`on_error`: error | skip)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; point `train_data` at a .jsonl file of preference pairs.")
    pairs: list[PreferenceExample] = []
    bad: list[str] = []
    with open(path, encoding="utf-8-sig", errors="strict") as fh:
        try:
            lines = list(enumerate(fh, start=1))
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8.") from None
    for number, text in lines:
        if not text.strip():
            continue
        try:
            prompt, chosen, rejected = parse_preference(json.loads(text))
        except (ValueError, RecursionError) as exc:
            bad.append(f"line {number}: {exc}")
            continue
        pairs.append(PreferenceExample(prompt, chosen, rejected, number))
    if bad and on_error != "skip":
        more = f" (and {len(bad) - MAX_REPORTED} more)" if len(bad) > MAX_REPORTED else ""
        raise DatasetError(
            f"{path}: {len(bad)} bad preference lines{more}:\n  " + "\n  ".join(bad[:MAX_REPORTED])
        )
    for message in bad:
        logger.warning("%s: skipped %s", path.name, message)
    if not pairs:
        raise DatasetError(f"{path} has no usable preference pairs.")
    return pairs


def _row(prompt_ids: list[int], full: list[int], max_length: int) -> tuple[Pack, bool]:
    ids = full[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + full[len(prompt_ids) :])[:max_length]
    return Pack(ids, labels, list(range(len(ids))), [len(ids)]), len(full) > max_length


def encode_pair(
    example: PreferenceExample, tokenizer: Any, max_length: int, template: str
) -> tuple[Pair, bool]:
    """The pair as two rows whose labels cover only the answer; (pair, truncated)."""
    where = f"line {example.line}"
    prompt_ids = _render(tokenizer, example.prompt, template, True, where)
    rows = []
    for answer in (example.chosen, example.rejected):
        full = _render(
            tokenizer, [*example.prompt, {"role": "assistant", "content": answer}], template, False, where
        )
        if full[: len(prompt_ids)] != prompt_ids:
            raise DatasetError(
                f"line {example.line}: the chat template does not render the prompt as a prefix of the answered "
                "conversation; set chat_template: chatml (or plain)."
            )
        rows.append(_row(prompt_ids, full, max_length))
    if len(prompt_ids) >= max_length:
        raise DatasetError(
            f"line {example.line}: the prompt alone is {len(prompt_ids)} tokens, over max_seq_length={max_length}; "
            "raise max_seq_length or shorten the prompt."
        )
    return Pair(rows[0][0], rows[1][0], example.line), rows[0][1] or rows[1][1]
