"""Text-LoRA data: JSONL in three shapes, validated line by line, rendered with the model's chat template, with
the loss only on the assistant's tokens, explicit truncation, and packing of short samples.

Accepted lines (detected per line, no registration step):
- `{"prompt": ..., "response": ..., "system"?: ...}`
- `{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}`
- alpaca `{"instruction": ..., "input"?: ..., "output": ...}`
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatasetError

logger = logging.getLogger(__name__)
IGNORE = -100  # the label transformers' loss ignores
ROLES = ("system", "user", "assistant")
MAX_REPORTED = 10
# Used when a tokenizer has no chat template and none is named (ChatML, as Qwen uses).
TEMPLATES = {
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "plain": (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}\n"
        "{% else %}{{ m['role'] }}: {{ m['content'] }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    ),
}


@dataclass
class Example:
    """One conversation; the assistant turns are what the model learns."""

    messages: list[dict[str, str]]
    line: int
    source: str = ""  # the JSONL file, for messages about this line

    @property
    def where(self) -> str:
        return f"{self.source}, line {self.line}" if self.source else f"line {self.line}"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    line: int
    truncated: bool = False


def _text(value: str, what: str) -> str:
    """`value` if it is text a tokenizer can take: JSON allows lone surrogate escapes (`"\\ud800"`), which no
    UTF-8 tokenizer can encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} holds a lone surrogate escape ({value[exc.start]!r} at character {exc.start + 1}); "
            "write the character itself or a complete \\uXXXX\\uXXXX pair"
        ) from None
    return value


def _messages(row: Any) -> list[dict[str, str]]:
    """The conversation a JSON line describes, or a ValueError saying what is wrong with it."""
    messages = _shape(row)
    return [{"role": m["role"], "content": _text(m["content"], m["role"])} for m in messages]


def _shape(row: Any) -> list[dict[str, str]]:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("`messages` must be a non-empty list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise ValueError(f"message {i + 1} needs role (system/user/assistant) and content text")
        if messages[-1]["role"] != "assistant":
            raise ValueError("the last message must be the assistant's answer")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if "prompt" in row or "response" in row:
        prompt, response = row.get("prompt"), row.get("response")
        if not isinstance(prompt, str) or not isinstance(response, str) or not response:
            raise ValueError("`prompt` and a non-empty `response` must both be text")
        system = [{"role": "system", "content": row["system"]}] if isinstance(row.get("system"), str) else []
        return [*system, {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    if "instruction" in row or "output" in row:
        instruction, output = row.get("instruction"), row.get("output")
        if not isinstance(instruction, str) or not isinstance(output, str) or not output:
            raise ValueError("alpaca lines need `instruction` and a non-empty `output` text")
        extra = row.get("input") or ""
        user = f"{instruction}\n\n{extra}" if extra else instruction
        return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    raise ValueError(
        f"unknown line shape (keys: {sorted(row)}); use prompt/response, messages, or instruction/input/output"
    )


def read_jsonl(path: Path, on_error: str = "error") -> list[Example]:
    """Every conversation in a JSONL file. Bad lines are named with their numbers (`on_error`: error | skip)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; point `train_data` at a .jsonl file.")
    examples, bad = [], []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                bad.append(f"line {number}: not UTF-8 text ({exc.reason}); save the file as UTF-8")
                continue
            if not text.strip():
                continue
            try:
                examples.append(Example(_messages(json.loads(text)), number, str(path)))
            except json.JSONDecodeError as exc:
                bad.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            except RecursionError:
                bad.append(f"line {number}: JSON nested too deeply to read; a conversation is a flat object")
            except ValueError as exc:
                bad.append(f"line {number}: {exc}")
    if bad and on_error != "skip":
        more = f" (and {len(bad) - MAX_REPORTED} more)" if len(bad) > MAX_REPORTED else ""
        raise DatasetError(f"{path}: {len(bad)} bad lines{more}:\n  " + "\n  ".join(bad[:MAX_REPORTED]))
    for message in bad:
        logger.warning("%s: skipped %s", path.name, message)
    if not examples:
        raise DatasetError(f"{path} has no usable lines.")
    return examples


def chat_template(tokenizer: Any, name: str | None = None) -> str:
    """The template to render with: a named one, else the tokenizer's own, else ChatML."""
    if name:
        if name not in TEMPLATES:
            raise DatasetError(
                f"unknown chat_template {name!r}; choose {sorted(TEMPLATES)} or leave it empty."
            )
        return TEMPLATES[name]
    return getattr(tokenizer, "chat_template", None) or TEMPLATES["chatml"]


def _render(
    tokenizer: Any, messages: list[dict[str, str]], template: str, generation: bool, where: str
) -> list[int]:
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=generation
        )
    except TemplateError as exc:
        # the template is the user's (or the model's) program: its refusal is about this line, not our bug
        roles = "/".join(dict.fromkeys(m["role"] for m in messages))
        raise DatasetError(
            f"{where}: the chat template refused this conversation ({roles}): {str(exc)[:200]}. "
            "Change the line (e.g. drop the system message, which some templates reject) or set "
            "chat_template: chatml."
        ) from None
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode(
    example: Example, tokenizer: Any, max_length: int, template: str, train_on_prompt: bool = False
) -> Encoded:
    """Token ids and labels: every assistant turn is learned, everything else is masked (unless
    `train_on_prompt`). Each turn boundary is found by rendering the conversation up to it."""
    ids: list[int] = []
    labels: list[int] = []
    for i, message in enumerate(example.messages):
        if message["role"] != "assistant":
            continue
        prefix = _render(tokenizer, example.messages[:i], template, True, example.where)
        full = _render(tokenizer, example.messages[: i + 1], template, False, example.where)
        if full[: len(ids)] != ids or full[: len(prefix)] != prefix:
            raise DatasetError(
                f"{example.where}: the chat template does not render turns as prefixes of each other; "
                "set chat_template: chatml (or plain)."
            )
        prompt_part = prefix[len(ids) :]
        labels += prompt_part if train_on_prompt else [IGNORE] * len(prompt_part)
        labels += full[len(prefix) :]
        ids = full
    truncated = len(ids) > max_length
    return Encoded(ids[:max_length], labels[:max_length], example.line, truncated)


@dataclass
class Pack:
    """Several samples in one row; positions restart per sample and attention stays inside each sample."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


def pack(samples: list[Encoded], max_length: int) -> list[Pack]:
    """First-fit-decreasing packing of samples into rows of at most `max_length` tokens."""
    rows: list[Pack] = []
    for sample in sorted(samples, key=lambda s: len(s.input_ids), reverse=True):
        n = len(sample.input_ids)
        row = next((r for r in rows if len(r.input_ids) + n <= max_length), None)
        if row is None:
            row = Pack()
            rows.append(row)
        row.input_ids += sample.input_ids
        # the first label of each sample is never predicted from the previous sample's last token
        row.labels += [IGNORE] + sample.labels[1:]
        row.position_ids += list(range(n))
        row.lengths.append(n)
    return rows


def truncation_report(encoded: list[Encoded], max_length: int) -> str | None:
    """A warning naming the lines cut at max_length, or None."""
    cut = [e.line for e in encoded if e.truncated]
    if not cut:
        return None
    lines = ", ".join(map(str, cut[:MAX_REPORTED])) + (" ..." if len(cut) > MAX_REPORTED else "")
    return f"{len(cut)} samples were cut at max_seq_length={max_length} (lines {lines}); raise it or shorten them."
