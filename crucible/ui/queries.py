"""The run browser's read queries (SQLAlchemy Core on the store's tables, SQLite or PostgreSQL).

Listing pages never read a run's outputs or assigns (they can be large): only the columns a
page shows, the metrics of the rows on it, and a sweep's matrix point taken out of the assigns
by the database. Sorting by a metric happens in the database too, numbers only.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crucible.flatten import flatten
from crucible.status import RunStatus
from crucible.store.schema import experiments, runs

__all__ = [
    "COLUMN_SORTS",
    "METRIC_SORT",
    "BatchSummary",
    "PointRow",
    "RunPage",
    "RunQuery",
    "RunRow",
    "batch_points",
    "experiment_ids",
    "recent_batches",
    "run_page",
]

COLUMN_SORTS: Final = ("started", "duration", "status", "experiment", "batch", "run")
METRIC_SORT: Final = "metric:"  # sort="metric:bench.p_value"
MAX_PER_PAGE: Final = 500
MAX_PAGE: Final = 1_000_000_000  # keeps OFFSET inside a 64-bit integer
_TEXT_COLUMNS = (
    runs.c.id,
    runs.c.experiment_id,
    runs.c.batch_id,
    runs.c.failure_message,
    runs.c.error_type,
)


@dataclass(frozen=True, slots=True)
class RunQuery:
    """What the runs page asks for: filters, one sort key, and a page."""

    experiment: str | None = None
    status: str | None = None
    batch: str | None = None
    text: str | None = None
    sort: str = "started"
    descending: bool = True
    page: int = 1
    per_page: int = 50

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in {s.value for s in RunStatus}:
            raise ValueError(f"unknown status {self.status!r}")
        if self.sort not in COLUMN_SORTS and not self.metric:
            raise ValueError(f"unknown sort {self.sort!r}")
        object.__setattr__(self, "page", min(MAX_PAGE, max(1, self.page)))
        object.__setattr__(self, "per_page", min(MAX_PER_PAGE, max(1, self.per_page)))

    @property
    def metric(self) -> str | None:
        """The metric this query sorts by, if it sorts by one."""
        if self.sort.startswith(METRIC_SORT) and len(self.sort) > len(METRIC_SORT):
            return self.sort[len(METRIC_SORT) :]
        return None


@dataclass(frozen=True, slots=True)
class RunRow:
    """One line of the runs page; ``metrics`` flattened (``bench.ttest.p_value``)."""

    run_id: str
    experiment_id: str
    status: str
    batch_id: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    metrics: dict[str, Any]

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of runs and how many match in all."""

    rows: tuple[RunRow, ...]
    total: int
    query: RunQuery

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.query.per_page))


def _filters(query: RunQuery) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if query.experiment:
        conds.append(runs.c.experiment_id == query.experiment)
    if query.status:
        conds.append(runs.c.status == query.status)
    if query.batch:
        conds.append(runs.c.batch_id == query.batch)
    if query.text:
        needle = query.text.lower()
        conds.append(
            sa.or_(*(sa.func.lower(c).contains(needle, autoescape=True) for c in _TEXT_COLUMNS))
        )
    return conds


def _duration(dialect: str) -> sa.ColumnElement[Any]:
    if dialect == "sqlite":
        return sa.func.julianday(runs.c.finished_at) - sa.func.julianday(runs.c.started_at)
    return sa.extract("epoch", runs.c.finished_at - runs.c.started_at)


def _metric_number(dialect: str, key: str) -> sa.ColumnElement[Any]:
    """The metric ``key`` (``a.b.c``, or a flat key with dots) as a number; NULL otherwise."""
    parts = key.split(".")
    paths = [parts, [key]] if len(parts) > 1 else [parts]
    exprs = [_number_at(dialect, p) for p in paths]
    return exprs[0] if len(exprs) == 1 else sa.func.coalesce(*exprs)


def _number_at(dialect: str, parts: Sequence[str]) -> sa.ColumnElement[Any]:
    if dialect == "sqlite":
        if any('"' in p or "\\" in p for p in parts):
            return sa.null()  # SQLite's JSON paths cannot name such a key
        path = "$" + "".join(f'."{p}"' for p in parts)
        kind = sa.func.json_type(runs.c.metrics, path)
        return sa.case((kind.in_(("integer", "real")), sa.func.json_extract(runs.c.metrics, path)))
    at = runs.c.metrics[tuple(parts)]
    return sa.case((sa.func.jsonb_typeof(at) == "number", at.as_float()))


def _order(query: RunQuery, dialect: str) -> list[sa.ColumnElement[Any]]:
    newest = [runs.c.started_at.desc(), runs.c.id.desc()]
    metric = query.metric
    nullable = True
    if metric is not None:
        key: sa.ColumnElement[Any] = _metric_number(dialect, metric)
    elif query.sort == "duration":
        key = _duration(dialect)
    else:
        column = {
            "started": runs.c.started_at,
            "status": runs.c.status,
            "run": runs.c.id,
            "experiment": runs.c.experiment_id,
            "batch": runs.c.batch_id,
        }[query.sort]
        key, nullable = column, query.sort == "batch"
    ordered = key.desc() if query.descending else key.asc()
    if nullable:
        ordered = ordered.nulls_last()
    if query.sort == "started":
        return [ordered, runs.c.id.desc() if query.descending else runs.c.id.asc()]
    return [ordered, *newest]


async def run_page(conn: AsyncConnection, query: RunQuery) -> RunPage:
    """The runs matching ``query``: the requested page, sorted, with the total count."""
    conds = _filters(query)
    stmt = (
        sa.select(
            runs.c.id,
            runs.c.experiment_id,
            runs.c.status,
            runs.c.batch_id,
            runs.c.started_at,
            runs.c.finished_at,
            runs.c.metrics,
        )
        .where(*conds)
        .order_by(*_order(query, conn.dialect.name))
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
    )
    rows = tuple(
        RunRow(
            r.id,
            r.experiment_id,
            r.status,
            r.batch_id,
            r.started_at,
            r.finished_at,
            flatten(r.metrics or {}),
        )
        for r in await conn.execute(stmt)
    )
    count = sa.select(sa.func.count()).select_from(runs).where(*conds)
    total = int((await conn.execute(count)).scalar_one())
    return RunPage(rows, total, query)


async def experiment_ids(conn: AsyncConnection) -> list[str]:
    """Every stored experiment id, sorted (the experiment filter's choices)."""
    result = await conn.execute(sa.select(experiments.c.id).order_by(experiments.c.id))
    return [str(i) for i in result.scalars()]


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """One batch: its runs counted by outcome, its experiments, when it started."""

    batch_id: str
    experiment_ids: tuple[str, ...]
    runs: int
    completed: int
    running: int
    started_at: dt.datetime

    @property
    def unsuccessful(self) -> int:
        return self.runs - self.completed - self.running


async def recent_batches(conn: AsyncConnection, *, limit: int = 100) -> list[BatchSummary]:
    """The most recently started batches, newest first."""
    started = sa.func.min(runs.c.started_at)
    stmt = (
        sa.select(
            runs.c.batch_id,
            sa.func.count(),
            sa.func.sum(sa.case((runs.c.status == RunStatus.COMPLETED.value, 1), else_=0)),
            sa.func.sum(sa.case((runs.c.status == RunStatus.RUNNING.value, 1), else_=0)),
            started,
            sa.func.min(runs.c.experiment_id),
            sa.func.max(runs.c.experiment_id),
        )
        .where(runs.c.batch_id.is_not(None))
        .group_by(runs.c.batch_id)
        .order_by(started.desc())
        .limit(limit)
    )
    out = []
    for batch_id, n, done, running, first, lo, hi in await conn.execute(stmt):
        names = (lo,) if lo == hi else (lo, hi)
        out.append(BatchSummary(batch_id, names, int(n), int(done), int(running), first))
    return out


@dataclass(frozen=True, slots=True)
class PointRow:
    """One run of a batch: its matrix point (empty outside sweeps) and flattened metrics."""

    run_id: str
    experiment_id: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    matrix: dict[str, Any]
    metrics: dict[str, Any]
    failure: str | None


async def batch_points(conn: AsyncConnection, batch_id: str) -> list[PointRow]:
    """Every run of ``batch_id`` in start order."""
    matrix = runs.c.assigns["matrix"]
    stmt = (
        sa.select(
            runs.c.id,
            runs.c.experiment_id,
            runs.c.status,
            runs.c.started_at,
            runs.c.finished_at,
            matrix.label("matrix"),
            runs.c.metrics,
            runs.c.failure_message,
        )
        .where(runs.c.batch_id == batch_id)
        .order_by(runs.c.started_at, runs.c.id)
    )
    return [
        PointRow(
            r.id,
            r.experiment_id,
            r.status,
            r.started_at,
            r.finished_at,
            dict(r.matrix) if isinstance(r.matrix, dict) else {},
            flatten(r.metrics or {}),
            r.failure_message,
        )
        for r in await conn.execute(stmt)
    ]
