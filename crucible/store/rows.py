"""The records the store writes, as rows: plain tuples in ``schema.py``'s column order.

A ``Shape`` names the columns a record fills; its rows carry JSON columns already encoded as text
(what both drivers take, what the journal keeps and what a retry reuses, so each value is encoded
once) and datetimes as timezone-aware ``datetime``. The builders below turn what the engine and
the RunStore API hand over into ``Record``s for the writer.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple

import sqlalchemy as sa

from crucible.context import Context
from crucible.experiment import Experiment
from crucible.provenance import experiment_config
from crucible.scrub import Scrubber, definition_secrets
from crucible.scrub import active as active_scrubber
from crucible.serialize import to_jsonable
from crucible.status import RunStatus
from crucible.store.schema import (
    JsonDocument,
    UTCDateTime,
    artifacts,
    checkpoints,
    experiments,
    runs,
    stage_attempts,
)
from crucible.trace import SpanRecord

__all__ = [
    "ARTIFACTS",
    "ATTEMPTS",
    "CHECKPOINTS",
    "EXPERIMENTS",
    "FINISHES",
    "RUNS",
    "RUN_EXTRA",
    "Record",
    "Shape",
    "artifact_record",
    "attempt_record",
    "checkpoint_record",
    "finish_record",
    "start_record",
]

START: Final = "start_run"
ATTEMPT: Final = "record_attempt"
ARTIFACT: Final = "record_artifact"
FINISH: Final = "finish_run"
CHECKPOINT: Final = "record_checkpoint"


class Json(str):
    """Text that is already JSON, handed to ``Shape.row``: the row gets it as a plain ``str``.

    Rows never hold a Json: an instance of a ``str`` subclass is tracked by the collector, and
    a tuple holding one stays tracked too, so every waiting record would cost each collection.
    """

    __slots__ = ()


EMPTY_LIST: Final = "[]"
EMPTY_DICT: Final = "{}"
_RUNNING: Final = RunStatus.RUNNING.value
_plain_str: Final = str.__str__  # a str subclass's text as an exact str


def _json_text(value: Any) -> Any:
    """A JSON column's value as text: None stays None, a Json becomes its plain text."""
    if value is None:
        return None
    return _plain_str(value) if type(value) is Json else json.dumps(value)


class Shape:
    """The columns of ``table`` that a record fills, in order, and how to encode them.

    ``json`` and ``datetimes`` are the positions of its JSON and datetime columns.
    """

    __slots__ = ("columns", "datetimes", "index", "json", "table")

    def __init__(self, table: sa.Table, columns: Iterable[str] | None = None) -> None:
        self.table = table
        if columns is None:  # every column the database does not fill itself
            columns = (c.name for c in table.columns if c.autoincrement is not True)
        self.columns: tuple[str, ...] = tuple(columns)
        self.index = {name: i for i, name in enumerate(self.columns)}
        types = [table.c[name].type for name in self.columns]
        self.json = tuple(i for i, t in enumerate(types) if isinstance(t, sa.JSON | JsonDocument))
        self.datetimes = frozenset(i for i, t in enumerate(types) if isinstance(t, UTCDateTime))

    def row(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """A row from ``values`` (missing columns are NULL); JSON columns encoded once, here."""
        row = [values.get(name) for name in self.columns]
        for i in self.json:
            row[i] = _json_text(row[i])
        return tuple(row)

    def to_plain(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """The row as a JSON-ready mapping (datetimes as ISO text), for the journal."""
        out = dict(zip(self.columns, row, strict=True))
        for i in self.datetimes:
            if row[i] is not None:
                out[self.columns[i]] = row[i].isoformat()
        return out

    def from_plain(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """A row back from ``to_plain`` (columns it lacks are NULL)."""
        row = [values.get(name) for name in self.columns]
        for i in self.datetimes:
            if row[i] is not None:
                row[i] = dt.datetime.fromisoformat(str(row[i]))
        return tuple(row)


EXPERIMENTS: Final = Shape(experiments)
RUNS: Final = Shape(runs)
ATTEMPTS: Final = Shape(stage_attempts)
ARTIFACTS: Final = Shape(artifacts)
CHECKPOINTS: Final = Shape(checkpoints)
# The finish updates these; a NULL in the last four keeps the stored value (no Context given).
FINISHES: Final = Shape(
    runs,
    ("status", "finished_at", "failure_stage", "failure_message", "error_type",
     "metrics", "outputs", "assigns", "trace_id", "id"),
)  # fmt: skip
SHAPES: Final = {
    START: RUNS, ATTEMPT: ATTEMPTS, ARTIFACT: ARTIFACTS, CHECKPOINT: CHECKPOINTS, FINISH: FINISHES,
}  # fmt: skip


class Record(NamedTuple):
    """One write for the writer: the operation, its run, its row (and a start's experiment).

    A ``durable`` record is retried and journaled when the database stays unreachable; one that
    is not (the RunStore's direct API) fails at the first error, as a plain database call would.
    A tuple of plain values, so the collector stops tracking it once it has looked at it: a
    record waiting for its commit no longer counts towards the next full collection. Whoever
    waits for a record's commit waits on a future the writer keeps (``Writer.write``).
    """

    op: str
    run_id: str
    row: tuple[Any, ...]
    experiment: tuple[Any, ...] | None = None
    durable: bool = True


def _record(
    op: str, run_id: str, row: tuple[Any, ...], experiment: tuple[Any, ...] | None, durable: bool
) -> Record:
    """``Record(...)`` without its generated ``__new__`` (a Python call): ~7 records a run."""
    return _new_tuple(Record, (op, run_id, row, experiment, durable))


_new_tuple: Final = tuple.__new__

# --- builders --------------------------------------------------------------------------------

_exp_cache: dict[int, tuple[weakref.ref[Experiment], dict[str, Any]]] = {}
_EXP_CACHE_SIZE: Final = 256


def _experiment_values(experiment: Experiment) -> dict[str, Any]:
    """The encoded definition of a (frozen) experiment, made once per experiment object."""
    hit = _exp_cache.get(id(experiment))
    if hit is not None and hit[0]() is experiment:
        return hit[1]
    hide = Scrubber(definition_secrets(experiment))  # its secrets, wherever they appear
    encoded = {
        "id": experiment.id,
        "definition": json.dumps(experiment_config(experiment)),
        "owner": experiment.owner,
        "tags": json.dumps(hide.value(to_jsonable(experiment.tags or []))),
        "metadata": json.dumps(hide.value(to_jsonable(experiment.metadata or {}))),
    }
    if len(_exp_cache) >= _EXP_CACHE_SIZE:
        _exp_cache.clear()
    _exp_cache[id(experiment)] = (weakref.ref(experiment), encoded)
    return encoded


# Direct tuples on the per-run path (a mapping per row cost more than the writes it feeds);
# these checks keep them in step with schema.py.
_RUN_TEMPLATE_COLUMNS: Final = (
    "id", "experiment_id", "status", "started_at", "finished_at", "trace_id", "batch_id",
    "metrics", "outputs", "assigns", "failure_stage", "failure_message", "error_type",
    "owner_pid", "owner_host",
)  # fmt: skip
_ATTEMPT_COLUMNS: Final = (
    "run_id", "stage", "name", "stage_index", "attempt", "result", "start_ns", "end_ns",
    "duration_s", "span_id", "parent_span_id", "error_type", "error_message", "events",
)  # fmt: skip
_FINISH_COLUMNS: Final = (
    "status", "finished_at", "failure_stage", "failure_message", "error_type", "metrics",
    "outputs", "assigns", "trace_id", "id",
)  # fmt: skip
_EXPERIMENT_COLUMNS: Final = (
    "id", "definition", "owner", "tags", "metadata", "created_at", "updated_at"
)  # fmt: skip
if (
    RUNS.columns[: len(_RUN_TEMPLATE_COLUMNS)] != _RUN_TEMPLATE_COLUMNS
    or ATTEMPTS.columns != _ATTEMPT_COLUMNS
    or FINISHES.columns != _FINISH_COLUMNS
    or EXPERIMENTS.columns != _EXPERIMENT_COLUMNS
):  # pragma: no cover - a schema change must update the builders below
    raise ImportError("crucible.store.rows: the row builders do not match the schema")
RUN_EXTRA: Final = RUNS.columns[len(_RUN_TEMPLATE_COLUMNS) :]
_RUN_EXTRA_JSON: Final = frozenset(RUNS.columns[i] for i in RUNS.json) & frozenset(RUN_EXTRA)


def start_record(
    experiment: Experiment,
    run_id: str,
    *,
    trace_id: str | None,
    batch_id: str | None,
    host: str,
    durable: bool,
    extra: Mapping[str, Any] | None = None,
    tail: tuple[Any, ...] | None = None,
) -> Record:
    """The experiment upsert and the ``running`` run row, owned by this process.

    ``extra`` fills more columns of the run's row (what it ran: ``reproducible.start_values``);
    ``tail`` is those columns already in order and encoded (``reproducible.start_tail``).
    """
    now = dt.datetime.now(dt.UTC)
    exp = _experiment_values(experiment)
    exp_row = (exp["id"], exp["definition"], exp["owner"], exp["tags"], exp["metadata"], now, now)
    head = (
        run_id, experiment.id, _RUNNING, now, None, trace_id, batch_id, EMPTY_DICT, EMPTY_LIST,
        EMPTY_DICT, None, None, None, os.getpid(), host,
    )  # fmt: skip
    if tail is None and extra:
        tail = tuple(
            _json_text(v) if name in _RUN_EXTRA_JSON else v
            for name, v in zip(RUN_EXTRA, map(extra.get, RUN_EXTRA), strict=True)
        )
    elif tail is None:
        tail = (None,) * len(RUN_EXTRA)
    return _record(START, run_id, _clean(head + tail), _clean(exp_row), durable)


def attempt_record(run_id: str, record: SpanRecord, *, durable: bool) -> Record:
    """One finished stage attempt (a SpanRecord from ``ctx.trace``)."""
    events = (
        json.dumps(to_jsonable([e.to_dict() for e in record.events]))
        if record.events
        else EMPTY_LIST
    )
    row = (
        run_id, record.stage, record.name, record.stage_index, record.attempt,
        str(record.result), record.start_ns, record.end_ns,
        record.duration_s, record.span_id, record.parent_span_id,
        record.error_type, record.error_message, events,
    )  # fmt: skip
    return _record(ATTEMPT, run_id, _clean(row), None, durable)


def artifact_record(
    run_id: str,
    name: str,
    *,
    type: str,
    location: str | os.PathLike[str] | None,
    format: str | None,
    metadata: Mapping[str, Any] | None,
    durable: bool,
) -> Record:
    """One artifact of a run; recording the same name again replaces it."""
    row = ARTIFACTS.row({
        "run_id": run_id, "name": str(name), "type": type,
        "location": None if location is None else os.fspath(location), "format": format,
        "metadata": to_jsonable(dict(metadata or {})), "created_at": dt.datetime.now(dt.UTC),
    })  # fmt: skip
    return Record(ARTIFACT, run_id, _clean(row), durable=durable)


def checkpoint_record(
    run_id: str, stage_index: int, stage: str, state: Mapping[str, Any], *, durable: bool
) -> Record:
    """The state a completed stage left (``checkpoint.encode_context``), queued after its run's
    start so that it is committed (or journaled) after it, never before."""
    row = CHECKPOINTS.row({
        "run_id": run_id, "stage_index": stage_index, "stage": stage, "state": dict(state),
        "created_at": dt.datetime.now(dt.UTC),
    })  # fmt: skip
    return Record(CHECKPOINT, run_id, _clean(row), durable=durable)


def finish_record(
    run_id: str,
    status: str,
    *,
    context: Context | None,
    failure_stage: str | None,
    failure_message: str | None,
    error_type: str | None,
    durable: bool,
) -> Record:
    """The final status and time, and (with a context) its metrics, outputs and assigns."""
    metrics = outputs = assigns = trace_id = None  # NULL keeps the stored value
    if context is not None:
        metrics = _encoded(context.metrics, EMPTY_DICT)
        outputs = _encoded(context.outputs, EMPTY_LIST)
        assigns = _encoded(context.assigns, EMPTY_DICT)
        if context.trace is not None and context.trace.trace_id:
            trace_id = context.trace.trace_id
    row = (
        str(status), dt.datetime.now(dt.UTC), failure_stage, failure_message, error_type,
        metrics, outputs, assigns, trace_id, run_id,
    )  # fmt: skip
    return _record(FINISH, run_id, _clean(row), None, durable)


def _encoded(value: Any, empty: str) -> str:
    return json.dumps(to_jsonable(value)) if value else empty


def _clean(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row with the running run's secret values scrubbed from its strings and JSON."""
    scrubber = active_scrubber()
    if scrubber.pattern is None:  # no secrets (not bool(): that is a call per record)
        return row
    scrubber = scrubber.encoded()  # JSON columns are already text here
    return tuple(scrubber.value(v) for v in row)
