"""The attributes of the engine's spans and span events: every value is built here.

Stage attributes are built once per planned stage and reused by every run of the plan; values
are already the types the SDK stores (``str``, ``int``, tuples of ``str``), so the SDK fast path
copies them without re-validating. Whatever must happen to a value before it leaves the process
happens in these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from crucible.redact import REDACTED, is_secret_key
from crucible.telemetry import conventions as names

_SCALARS = (bool, int, float, str)
NO_ATTRIBUTES: Mapping[str, Any] = {}


def clean_copy(attributes: Mapping[str, Any], max_len: int | None) -> dict[str, Any] | None:
    """A copy of ``attributes`` when the SDK would store every key and value unchanged, else None.

    Plain ``str`` (within ``max_len``), ``bool``, ``int``, ``float`` and tuples of such strings
    qualify; for anything else the caller lets the SDK validate.
    """
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        t = type(value)
        if t is str:
            if max_len is not None and len(value) > max_len:
                return None
        elif t is not int and t is not float and t is not bool:
            if t is not tuple:
                return None
            for item in value:
                if type(item) is not str or (max_len is not None and len(item) > max_len):
                    return None
        if type(key) is not str or not key:
            return None
        out[key] = value
    return out


class Checked(dict[str, Any]):
    """Attributes ``clean_copy`` passed once; ``longest`` is their longest string.

    A plan's per-stage attributes are reused by every run: the span maker copies them without
    checking each value again, as long as ``longest`` is within the tracer's length limit.
    """

    __slots__ = ("longest",)
    longest: int


def checked(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """``attributes`` as :class:`Checked` when every value qualifies, else unchanged."""
    if clean_copy(attributes, None) is None:
        return attributes
    out = Checked(attributes)
    out.longest = max(
        (len(s) for v in out.values() for s in (v if type(v) is tuple else (v,)) if type(s) is str),
        default=0,
    )
    return out


def run_attributes(
    experiment_id: str,
    run_id: str,
    stage_count: int,
    *,
    batch_id: str | None = None,
    rerun_of: str | None = None,
    resumed_from: str | None = None,
) -> dict[str, Any]:
    """The run span's attributes when it starts."""
    attrs: dict[str, Any] = {
        names.PIPELINE_NAME: experiment_id,
        names.PIPELINE_RUN_ID: run_id,
        names.STAGE_COUNT: stage_count,
    }
    if batch_id is not None:
        attrs[names.BATCH_ID] = batch_id
    if rerun_of is not None:
        attrs[names.RUN_RERUN_OF] = rerun_of
    if resumed_from is not None:
        attrs[names.RUN_RESUMED_FROM] = resumed_from
    return attrs


def run_end_attributes(result: str | None, error: BaseException | None) -> dict[str, Any]:
    """The run span's attributes when it ends (``result`` None: refused before any stage)."""
    attrs: dict[str, Any] = {}
    if result is not None:
        attrs[names.PIPELINE_RESULT] = result
    if error is not None:
        attrs[names.ERROR_TYPE] = type(error).__qualname__
    return attrs


def stage_attributes(
    name: str, index: int, option_keys: Iterable[str], options_json: str
) -> dict[str, Any]:
    """A planned stage's span attributes (every attempt and skip starts from these)."""
    return {
        names.TASK_NAME: name,
        names.STAGE_INDEX: index,
        names.STAGE_OPTION_KEYS: tuple(sorted(option_keys)),
        names.STAGE_OPTIONS: options_json,
    }


def attempt_attributes(stage: Mapping[str, Any], attempt: int) -> dict[str, Any]:
    """A stage attempt's span attributes when it starts."""
    return {**stage, names.STAGE_ATTEMPT: attempt}


def skip_attributes(stage: Mapping[str, Any], *, restored: bool) -> dict[str, Any]:
    """A skipped stage's span attributes (``restored``: done by the run this one resumes)."""
    attrs = {**stage, names.TASK_RUN_RESULT: names.RESULT_SKIP}
    if restored:
        attrs[names.STAGE_RESTORED] = True
    return attrs


def stage_end_attributes(
    span_id: str, result: str, error: BaseException | None, url: str | None
) -> dict[str, Any]:
    """A stage attempt's span attributes when it ends."""
    attrs: dict[str, Any] = {names.TASK_RUN_ID: span_id, names.TASK_RUN_RESULT: result}
    if error is not None:
        attrs[names.ERROR_TYPE] = type(error).__qualname__
    if url is not None:
        attrs[names.TASK_RUN_URL] = url
    return attrs


def event_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce event attributes to OpenTelemetry attribute types (others become strings); the
    value under a secret-looking key is redacted."""
    out: dict[str, Any] = {}
    for k, v in attributes.items():
        if is_secret_key(k):
            out[k] = REDACTED
        elif isinstance(v, bool | int | float | str):
            out[k] = v
        elif isinstance(v, list | tuple) and all(isinstance(i, _SCALARS) for i in v):
            out[k] = list(v)
        else:
            out[k] = repr(v)
    return out
