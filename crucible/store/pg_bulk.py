"""PgBulk: one batch of records as one PostgreSQL statement, in one round trip.

A batch written statement by statement (``BEGIN``, an ``executemany`` per table, the owners'
read, ``COMMIT``) took six round trips, and on the writer thread each one waits for the GIL
twice while the callers' loop is busy. Here the rows travel as one array per column and a single
statement writes every table through data-modifying CTEs over ``unnest``: one round trip, one
implicit transaction, no ``executemany`` per row. What ``RETURNING`` gives back says which starts
met a stored run and which finishes found none; only then does a second query read the owners.

The statement's parts see one snapshot, so a finish cannot update a row that a start in the same
statement inserts. A run whose start and finish share a batch (a short run, a journal replay) is
inserted finished instead: its finish's values on its start row. Should that start meet its own
stored row (a retry, a replay), the finish follows in a second statement. A batch holding one
artifact name twice needs its statements in order: :meth:`PgBulk.apply` returns None and the
writer takes the statement-by-statement way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
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
from crucible.store.sql import Applied, Statements

__all__ = ["PgBulk"]

_KEEP_IF_NULL: Final = frozenset({"metrics", "outputs", "assigns", "trace_id"})
_ORDER: Final = (EXPERIMENTS, RUNS, ATTEMPTS, ARTIFACTS, CHECKPOINTS, FINISHES)


def _array_types(shape: Shape) -> list[str]:
    """The array type each column travels as (text for strings: assigning it checks lengths)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    out = []
    for name in shape.columns:
        column_type = shape.table.c[name].type
        if isinstance(column_type, sa.String):
            out.append("text[]")
        else:
            out.append(f"{column_type.compile(dialect=dialect)}[]")
    return out


def _statement() -> str:
    params: dict[int, list[str]] = {}
    n = 0
    for shape in _ORDER:
        types = _array_types(shape)
        params[id(shape)] = [f"${n + i + 1}::{t}" for i, t in enumerate(types)]
        n += len(types)

    def source(shape: Shape) -> str:
        cols = ", ".join(f'"{c}"' for c in shape.columns)
        return f"unnest({', '.join(params[id(shape)])}) AS u({cols})"

    def insert(shape: Shape, conflict: str, returning: str, keep: Sequence[str] | None) -> str:
        cols = ", ".join(f'"{c}"' for c in shape.columns)
        head = (
            f'INSERT INTO "{shape.table.name}" ({cols}) SELECT {cols} FROM {source(shape)} '
            f"ON CONFLICT ({conflict})"
        )
        if keep is None:
            return f"{head} DO NOTHING RETURNING {returning}"
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in shape.columns if c not in keep)
        return f"{head} DO UPDATE SET {sets} RETURNING {returning}"

    sets = ", ".join(
        f'"{c}" = COALESCE(u."{c}", runs."{c}")' if c in _KEEP_IF_NULL else f'"{c}" = u."{c}"'
        for c in FINISHES.columns[:-1]
    )
    return (
        "WITH e AS ("
        + insert(EXPERIMENTS, '"id"', "1", keep=("id", "created_at"))
        + "), r AS ("
        + insert(RUNS, '"id"', '"id"', keep=None)
        + "), a AS ("
        + insert(ATTEMPTS, '"run_id", "span_id"', "1", keep=None)
        + "), x AS ("
        + insert(ARTIFACTS, '"run_id", "name"', "1", keep=("run_id", "name"))
        + "), c AS ("
        + insert(CHECKPOINTS, '"run_id", "stage_index"', "1", keep=None)
        + f"), f AS (UPDATE runs SET {sets} FROM {source(FINISHES)} WHERE runs.id = u.id "
        + "RETURNING runs.id) "
        + "SELECT ARRAY(SELECT id FROM r), ARRAY(SELECT id FROM f)"
    )


STATEMENT: Final = _statement()


def _columns(sql: Statements, shape: Shape, rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    if not rows:
        return [[] for _ in shape.columns]
    return [list(column) for column in zip(*sql.driver_rows(shape, rows), strict=True)]


class PgBulk:
    """Writes a batch with :data:`STATEMENT` on a connection in autocommit mode."""

    async def apply(
        self, conn: AsyncConnection, sql: Statements, records: Sequence[Record]
    ) -> Applied | None:
        """Commit ``records``; None (nothing written) when they need the statements in order."""
        exps: dict[str, tuple[Any, ...]] = {}
        by_op: dict[str, list[tuple[Any, ...]]] = {
            START: [], ATTEMPT: [], ARTIFACT: [], CHECKPOINT: [], FINISH: [],
        }  # fmt: skip
        for rec in records:
            if rec.op == START:
                assert rec.experiment is not None
                exps[rec.experiment[0]] = rec.experiment
            by_op[rec.op].append(rec.row)
        starts, finishes, artifacts = by_op[START], by_op[FINISH], by_op[ARTIFACT]
        if len({(a[0], a[1]) for a in artifacts}) < len(artifacts):
            return None
        rid_at = RUNS.index["id"]
        started = {r[rid_at] for r in starts}
        finished = {r[-1] for r in finishes}
        held = {r[-1]: r for r in finishes if r[-1] in started}  # inserted finished
        if held:
            starts = [_finished(r, held[r[rid_at]]) if r[rid_at] in held else r for r in starts]
            finishes = [r for r in finishes if r[-1] not in held]
        inserted, updated = await self._execute(conn, sql, exps, starts, by_op[ATTEMPT],
                                                artifacts, by_op[CHECKPOINT], finishes)  # fmt: skip
        applied = Applied(missing=finished - held.keys() - updated)
        met = started - inserted  # a stored run had the id: refused unless it is this very start
        if met:
            key = [RUNS.index[c] for c in ("owner_host", "owner_pid", "started_at")]
            ours = {r[rid_at]: tuple(r[i] for i in key) for r in sql.driver_rows(RUNS, starts)}
            found = await conn.exec_driver_sql(sql.select_owners, (sql.id_list(sorted(met)),))
            for stored in found:
                if tuple(stored[1:]) != ours[stored[0]]:
                    applied.refused.add(stored[0])
            again = [held[i] for i in sorted(met & held.keys() - applied.refused)]
            if again:  # its own earlier start is stored: the finish updates it as usual
                _, done = await self._execute(conn, sql, {}, [], [], [], [], again)
                applied.missing |= {r[-1] for r in again} - done
        return applied

    async def _execute(
        self,
        conn: AsyncConnection,
        sql: Statements,
        exps: dict[str, tuple[Any, ...]],
        *tables: Sequence[tuple[Any, ...]],
    ) -> tuple[set[str], set[str]]:
        """Run :data:`STATEMENT` on rows of runs, attempts, artifacts, checkpoints and finishes:
        the ids it inserted and the ids it finished."""
        params: list[Any] = []
        for shape, rows in zip(_ORDER, ([exps[k] for k in sorted(exps)], *tables), strict=True):
            params.extend(_columns(sql, shape, rows))
        result: Sequence[Any] = (await conn.exec_driver_sql(STATEMENT, tuple(params))).one()
        return set(result[0]), set(result[1])


_FINISH_AT: Final = tuple((RUNS.index[c], i) for i, c in enumerate(FINISHES.columns[:-1]))


def _finished(start: tuple[Any, ...], finish: tuple[Any, ...]) -> tuple[Any, ...]:
    """The start row with the finish's values, as the finish's UPDATE would leave it."""
    row = list(start)
    for at, i in _FINISH_AT:
        value = finish[i]
        if value is not None or FINISHES.columns[i] not in _KEEP_IF_NULL:
            row[at] = value
    return tuple(row)
