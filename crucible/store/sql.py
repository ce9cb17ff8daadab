"""The SQL the writer runs, built once per dialect from the row shapes, and one batch's commit.

Every statement is idempotent, so a retried commit or a journal replayed twice adds nothing:
experiments and artifacts upsert, runs, attempts and checkpoints insert ``ON CONFLICT DO
NOTHING``, finishes update. Rows go to the driver as plain tuples through ``executemany`` (no
per-row compile).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from crucible.store.rows import (
    ARTIFACT,
    ARTIFACTS,
    ATTEMPT,
    ATTEMPTS,
    CHECKPOINT,
    CHECKPOINTS,
    EXPERIMENTS,
    FINISH,
    FINISHES,
    RUNS,
    START,
    Record,
    Shape,
)

__all__ = ["Applied", "Statements", "apply", "owner_keys", "owners_found"]

_KEEP_IF_NULL: Final = frozenset({"metrics", "outputs", "assigns", "trace_id"})


class Statements:
    """The writer's SQL for one dialect, and the conversion of rows into driver values."""

    def __init__(self, dialect: Dialect) -> None:
        if dialect.paramstyle not in ("qmark", "numeric_dollar"):
            raise ValueError(
                f"the run store writes through aiosqlite or asyncpg, not {dialect.driver}"
            )
        self._dollar = dialect.paramstyle == "numeric_dollar"
        self._pg = dialect.name == "postgresql"
        self._quote = dialect.identifier_preparer.quote
        self.upsert_experiments = self._insert(EXPERIMENTS, ("id",), keep=("id", "created_at"))
        self.insert_runs = self._insert(RUNS, ("id",))
        self.insert_attempts = self._insert(ATTEMPTS, ("run_id", "span_id"))
        self.upsert_artifacts = self._insert(ARTIFACTS, ("run_id", "name"),
                                             keep=("run_id", "name"))  # fmt: skip
        self.insert_checkpoints = self._insert(CHECKPOINTS, ("run_id", "stage_index"))
        sets = ", ".join(
            f"{q} = COALESCE({p}, {q})" if name in _KEEP_IF_NULL else f"{q} = {p}"
            for name, q, p in zip(FINISHES.columns[:-1], self._names(FINISHES.columns[:-1]),
                                  self._params(len(FINISHES.columns) - 1), strict=True)
        )  # fmt: skip
        where = self._param(len(FINISHES.columns))  # the id is the last column of a finish
        self.finish_runs = f"UPDATE runs SET {sets} WHERE id = {where}"
        # One fixed text for any number of ids (prepared once): an array, or a JSON list.
        owners = "SELECT id, owner_host, owner_pid, started_at FROM runs WHERE id"
        self.select_owners = (
            f"{owners} = ANY($1::varchar[])"
            if self._pg
            else f"{owners} IN (SELECT value FROM json_each(?))"
        )
        self._convert = {
            id(shape): _converters(shape, dialect)
            for shape in (EXPERIMENTS, RUNS, ATTEMPTS, ARTIFACTS, CHECKPOINTS, FINISHES)
        }

    def _param(self, n: int) -> str:
        return f"${n}" if self._dollar else "?"

    def _params(self, n: int) -> list[str]:
        return [self._param(i) for i in range(1, n + 1)]

    def _names(self, names: Sequence[str]) -> list[str]:
        return [self._quote(n) for n in names]

    def _insert(self, shape: Shape, conflict: Sequence[str], keep: Sequence[str] = ()) -> str:
        cols = ", ".join(self._names(shape.columns))
        values = ", ".join(self._params(len(shape.columns)))
        target = ", ".join(self._names(conflict))
        head = f"INSERT INTO {self._quote(shape.table.name)} ({cols}) VALUES ({values})"
        if not keep:
            return f"{head} ON CONFLICT ({target}) DO NOTHING"
        updates = ", ".join(f"{q} = excluded.{q}" for q in self._names(
            [c for c in shape.columns if c not in keep]))  # fmt: skip
        return f"{head} ON CONFLICT ({target}) DO UPDATE SET {updates}"

    def id_list(self, ids: Sequence[str]) -> Any:
        """The one parameter of ``select_owners``."""
        return list(ids) if self._pg else json.dumps(list(ids))

    def driver_rows(self, shape: Shape, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Rows as the driver takes them (datetimes converted; everything else is as is)."""
        converters = self._convert[id(shape)]
        if not converters:
            return list(rows)
        out = []
        for row in rows:
            values = list(row)
            for i, convert in converters:
                values[i] = convert(values[i])
            out.append(tuple(values))
        return out


def _converters(shape: Shape, dialect: Dialect) -> list[tuple[int, Callable[[Any], Any]]]:
    """SQLAlchemy's own bind processing for the datetime columns (the only ones that need it);
    on SQLite the same text made in one step (``tests/store/test_rows.py`` compares them)."""
    found: list[tuple[int, Callable[[Any], Any]]] = []
    for i in sorted(shape.datetimes):
        column_type = shape.table.c[shape.columns[i]].type
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            found.append((i, sqlite_datetime if dialect.name == "sqlite" else process))
    return found


def sqlite_datetime(value: dt.datetime | None) -> str | None:
    """An aware datetime as SQLAlchemy's SQLite ``DateTime`` stores it: UTC, naive text with
    microseconds (``2026-12-04 19:41:43.000000``)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored; pass a timezone-aware one")
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@dataclass(slots=True)
class Applied:
    """What one commit found: starts refused (the id was stored by another run), finishes of
    runs that are not stored."""

    refused: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)


async def apply(conn: AsyncConnection, sql: Statements, records: Sequence[Record]) -> Applied:
    """Write ``records`` in the open transaction ``conn``, in foreign-key order.

    Experiments (deduplicated, last wins; sorted so that two writers never deadlock), runs,
    attempts, artifacts, checkpoints, finishes. Writes come first and reads after, so a SQLite
    transaction never has to upgrade a stale read snapshot.
    """
    exps: dict[str, tuple[Any, ...]] = {}
    starts: list[tuple[Any, ...]] = []
    by_op: dict[str, list[tuple[Any, ...]]] = {ATTEMPT: [], ARTIFACT: [], CHECKPOINT: [],
                                               FINISH: []}  # fmt: skip
    for rec in records:
        if rec.op == START:
            assert rec.experiment is not None
            exps[rec.experiment[0]] = rec.experiment
            starts.append(rec.row)
        else:
            by_op[rec.op].append(rec.row)
    run = conn.exec_driver_sql
    if exps:
        await run(sql.upsert_experiments,
                  sql.driver_rows(EXPERIMENTS, [exps[k] for k in sorted(exps)]))  # fmt: skip
    started = sql.driver_rows(RUNS, starts)
    if started:
        await run(sql.insert_runs, started)
    if by_op[ATTEMPT]:
        await run(sql.insert_attempts, sql.driver_rows(ATTEMPTS, by_op[ATTEMPT]))
    if by_op[ARTIFACT]:
        await run(sql.upsert_artifacts, sql.driver_rows(ARTIFACTS, by_op[ARTIFACT]))
    if by_op[CHECKPOINT]:
        await run(sql.insert_checkpoints, sql.driver_rows(CHECKPOINTS, by_op[CHECKPOINT]))
    if by_op[FINISH]:
        await run(sql.finish_runs, sql.driver_rows(FINISHES, by_op[FINISH]))
    applied = Applied()
    finished = {r[-1] for r in by_op[FINISH]}
    if not started and not finished:
        return applied
    # One read for both checks. ON CONFLICT DO NOTHING kept another run's row where the owner
    # columns differ from ours; a finish updated nothing where the run is not stored.
    ours = owner_keys(started)
    found = await run(sql.select_owners, (sql.id_list([*ours, *finished]),))
    return owners_found(ours, finished, found)


def owner_keys(starts: Iterable[Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    """Each start row's (owner_host, owner_pid, started_at), by run id (driver rows)."""
    rid_at = RUNS.index["id"]
    key = [RUNS.index[c] for c in ("owner_host", "owner_pid", "started_at")]
    return {r[rid_at]: tuple(r[i] for i in key) for r in starts}


def owners_found(
    ours: Mapping[str, tuple[Any, ...]], finished: set[str], found: Iterable[Sequence[Any]]
) -> Applied:
    """The outcome of a batch from the stored (id, owner_host, owner_pid, started_at) rows of
    its runs: a start that met a stored row is refused unless that row is this very start (a
    retry or a replay); a finish that found no row is of a run that is not stored."""
    applied = Applied()
    stored: set[str] = set()
    for row in found:
        stored.add(row[0])
        mine = ours.get(row[0])
        if mine is not None and tuple(row[1:]) != mine:
            applied.refused.add(row[0])
    applied.missing = finished - stored
    return applied
