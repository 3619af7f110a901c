"""The typed schema of the events a run emits (events.jsonl and callbacks): one TypedDict per kind.

One field name for one thing across image and text runs: the planned steps are `total_steps` in `started` and
in `step`; the best evaluation is `best_step` / `best_loss` in `early_stop`. `EventSink.emit` checks every
record against this schema and logs what does not fit (a report must never stop training); the tests run
image and text trainings and assert that no record breaks it. Hosts read these names (host/jobs.py,
host/charts.py, nodes/train_node.py, lora_scripts_webui/session.py, js/lora_scripts.js).
"""

# no `from __future__ import annotations`: TypedDict must see NotRequired[...] itself (Python < 3.12)

import types
import typing
from typing import Any, NotRequired, TypedDict


class Estimate(TypedDict):
    """The pre-flight estimate (perf/estimate.py `RunEstimate.event()`; its fields are that dataclass's)."""

    summary: str


class LoadingModel(TypedDict):
    base_model: str


class Caching(TypedDict):
    images: int
    mode: str


class Started(TypedDict):
    total_steps: int
    start_step: int
    # image runs
    family: NotRequired[str]
    prediction_type: NotRequired[str]
    images: NotRequired[int]
    validation_images: NotRequired[int]
    examples: NotRequired[int]
    resolution: NotRequired[list]
    modules: NotRequired[int]
    output_dir: NotRequired[str]
    output_name: NotRequired[str]
    precision: NotRequired[str]
    processes: NotRequired[int]
    # text runs
    rows: NotRequired[int]
    eval_rows: NotRequired[int]
    objective: NotRequired[str]
    reference_s: NotRequired[float]


class Resumed(TypedDict):
    step: int
    checkpoint: str


class Step(TypedDict):
    """Text preference runs add their metrics (margin, accuracy, ...) as further number fields."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    it_per_s: float
    eta_s: float | None
    tokens_seen: NotRequired[int]


class Validation(TypedDict):
    step: int
    loss: float
    best_step: int | None
    best_loss: float | None


class Eval(TypedDict):
    """Text runs; preference runs add `eval_<metric>` number fields."""

    step: int
    eval_loss: float


class EarlyStop(TypedDict):
    step: int
    best_step: int
    best_loss: float


class Checkpoint(TypedDict):
    step: int
    path: str
    lora: NotRequired[str]  # image runs: the LoRA file written with the checkpoint


class Sample(TypedDict):
    step: int
    paths: list
    steps: int  # the denoising steps and guidance the samples were drawn with (config's or the model's own)
    guidance_scale: float


class SelfTest(TypedDict):
    ok: bool
    summary: str
    problems: list
    warnings: list


class ServingCheck(TypedDict):
    adapter: str
    rank: int
    scale: float
    ok: bool
    errors: dict
    notes: list
    commands: dict


class Finished(TypedDict):
    steps: int
    loss: float | None
    lora: NotRequired[str]  # image
    compat_ok: NotRequired[bool | None]
    seconds: NotRequired[float]
    peak_vram_bytes: NotRequired[int | None]
    best_step: NotRequired[int]
    best_validation_loss: NotRequired[float]
    best_lora: NotRequired[str | None]
    adapter: NotRequired[str]  # text
    eval_loss: NotRequired[float | None]


class Stopped(TypedDict):
    message: str


class Error(TypedDict):
    kind: str
    message: str


EVENT_TYPES: dict[str, type] = {
    "estimate": Estimate,
    "loading_model": LoadingModel,
    "caching": Caching,
    "started": Started,
    "resumed": Resumed,
    "step": Step,
    "validation": Validation,
    "eval": Eval,
    "early_stop": EarlyStop,
    "checkpoint": Checkpoint,
    "sample": Sample,
    "self_test": SelfTest,
    "serving_check": ServingCheck,
    "finished": Finished,
    "stopped": Stopped,
    "error": Error,
}
# kinds whose records may carry further fields: the estimate's dataclass, the preference metrics (numbers)
OPEN_KINDS = {"estimate": None, "step": (int, float), "eval": (int, float)}


def _fits(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_fits(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:  # ints are numbers too; non-finite floats are written as text ("nan", "inf")
        return isinstance(value, (int, float, str)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(tp) or tp
    return isinstance(value, origin)


def event_problems(record: dict[str, Any]) -> list[str]:
    """What in one event record does not fit the schema (empty when it fits)."""
    kind = record.get("event")
    schema = EVENT_TYPES.get(kind)
    if schema is None:
        return [f"unknown event kind {kind!r}"]
    hints = typing.get_type_hints(schema)
    fields = {k: v for k, v in record.items() if k not in ("event", "time")}
    problems = [f"{kind}: missing `{k}`" for k in sorted(schema.__required_keys__) if k not in fields]
    for key, value in fields.items():
        if key in hints:
            if not _fits(value, hints[key]):
                problems.append(f"{kind}: `{key}` is {value!r}, not {hints[key]}")
        elif kind not in OPEN_KINDS:
            problems.append(f"{kind}: unknown field `{key}`")
        elif OPEN_KINDS[kind] is not None and not isinstance(value, OPEN_KINDS[kind]):
            problems.append(f"{kind}: extra field `{key}` is {value!r}, not a number")
    return problems
