"""SqliteBulk: one batch of records as one SQLite statement, on the writer thread.

The writer thread gets the GIL back after every database call only once the callers' busy loop
lets go of it (up to the interpreter's switch interval, 5 ms), and a batch written through
aiosqlite made dozens of such calls: commits of a loaded store lasted tens of milliseconds and
the runs waiting for them left the loop idle; ``executemany`` pays one per row. Here a batch is
a single ``INSERT`` into a temporary view whose ``INSTEAD OF`` trigger writes every table from
JSON arrays (``json_each``): one call, one implicit transaction, and SQLite's work runs without
the GIL, beside the loop. ``total_changes`` tells whether every row went in as expected; only
when not (a replay, a duplicate id, a finish of a run that is not stored) does a second query
look at the stored owners. Needs SQLite 3.33 (``UPDATE ... FROM``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy.exc import DBAPIError

from crucible.errors import StoreError
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
from crucible.store.sql import Applied, Statements, owner_keys, owners_found

__all__ = [
    "AVAILABLE",
    "PRAGMAS",
    "SHAPES",
    "Busy",
    "Sorted",
    "SqliteBulk",
    "owners_of",
    "statements",
]

AVAILABLE: Final = sqlite3.sqlite_version_info >= (3, 33, 0)
# sqlite3 binds exact int, float, str and bytes as they are; any other value (None) goes
# through its adapter protocol, which without a registered adapter raises and clears an
# AttributeError per value: about a tenth of a batch's cost on the callers' thread. A
# registered adapter is found first. None stays None ({}.get of a key it lacks), so
# registering it changes nothing for anyone else's sqlite3.
if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
    _NO_VALUES: Final[dict[None, None]] = {}
    sqlite3.register_adapter(type(None), _NO_VALUES.get)
_KEEP_IF_NULL: Final = frozenset({"metrics", "outputs", "assigns", "trace_id"})
_VIEW: Final = "crucible_batch"
_SLOTS: Final = ("experiments", "runs", "attempts", "artifacts", "checkpoints", "finishes")


PRAGMAS: Final = ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL")


class Busy(Exception):
    """Another connection holds the write lock (``apply_now``): nothing was written."""


def _pick(shape: Shape, names: Sequence[str], alias: str) -> list[str]:
    return [f"json_extract({alias}, '$[{shape.index[n]}]')" for n in names]


def _insert(shape: Shape, slot: str, conflict: str, keep: Sequence[str] | None = None) -> str:
    cols = ", ".join(f'"{c}"' for c in shape.columns)
    values = ", ".join(_pick(shape, shape.columns, "value"))
    head = (  # WHERE true: SQLite's rule for an upsert whose rows come from a SELECT
        f'INSERT INTO "{shape.table.name}" ({cols}) SELECT {values} '
        f"FROM json_each(NEW.{slot}) WHERE true ON CONFLICT ({conflict})"
    )
    if keep is None:
        return f"{head} DO NOTHING;"
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in shape.columns if c not in keep)
    return f"{head} DO UPDATE SET {sets};"


def _update_finishes() -> str:
    names = FINISHES.columns[:-1]  # the id is the last column of a finish
    sets = ", ".join(
        f'"{n}" = COALESCE({v}, "{n}")' if n in _KEEP_IF_NULL else f'"{n}" = {v}'
        for n, v in zip(names, _pick(FINISHES, names, "f.value"), strict=True)
    )
    rid = _pick(FINISHES, ["id"], "f.value")[0]
    return f"UPDATE runs SET {sets} FROM json_each(NEW.finishes) AS f WHERE runs.id = {rid};"


# Foreign-key order; experiments sorted by the caller, so two writers never deadlock.
_SETUP: Final = (
    f"CREATE TEMP VIEW IF NOT EXISTS {_VIEW} ({', '.join(_SLOTS)}) AS "
    f"SELECT {', '.join('NULL' for _ in _SLOTS)}",
    f"CREATE TEMP TRIGGER IF NOT EXISTS {_VIEW}_write INSTEAD OF INSERT ON {_VIEW} BEGIN "
    + _insert(EXPERIMENTS, "experiments", '"id"', keep=("id", "created_at"))
    + _insert(RUNS, "runs", '"id"')
    + _insert(ATTEMPTS, "attempts", '"run_id", "span_id"')
    + _insert(ARTIFACTS, "artifacts", '"run_id", "name"', keep=("run_id", "name"))
    + _insert(CHECKPOINTS, "checkpoints", '"run_id", "stage_index"')
    + _update_finishes()
    + " END",
)
_WRITE: Final = f"INSERT INTO {_VIEW} VALUES ({', '.join('?' for _ in _SLOTS)})"


class SqliteBulk:
    """One stdlib connection to a SQLite file, opened on first use; see the module doc.

    Its methods run on the writer thread, one at a time.
    """

    def __init__(self, path: Path, busy_timeout: float, check_file: Callable[[], None]) -> None:
        self.path = path
        self.busy_timeout = busy_timeout  # 0: never wait for a lock (raise Busy instead)
        self._check_file = check_file
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        self._check_file()  # a file deleted meanwhile must not come back, empty, under its name
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)  # fmt: skip
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            for pragma in PRAGMAS:
                conn.execute(pragma)
            for statement in _SETUP:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the connection (the next ``apply`` opens it again)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @contextlib.contextmanager
    def _closing_on_failure(self) -> Iterator[None]:
        """Whatever goes wrong (but Busy), the next batch starts on a fresh connection; driver
        errors come as SQLAlchemy's."""
        try:
            yield
        except Busy:
            raise
        except sqlite3.Error as err:
            self.close()
            raise DBAPIError.instance(None, None, err, sqlite3.Error) from err
        except BaseException:
            self.close()
            raise

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn or self._connect()
        self._conn = conn
        return conn

    def apply(self, sql: Statements, records: Sequence[Record]) -> Applied:
        """Commit ``records`` as one statement; driver errors come as SQLAlchemy's."""
        with self._closing_on_failure():
            applied = _write(self._connection(), sql, records)
        return applied

    def begin_now(self, sql: Statements, records: Sequence[Record]) -> Applied:
        """Write ``records`` with ``executemany`` in a transaction left open for :meth:`commit`.

        Meant for a connection that never waits (``busy_timeout`` 0), on the callers' thread:
        :class:`Busy` (nothing written) when another connection holds the lock. Binding the rows
        needs the GIL, so it is done here in one go; the COMMIT, which is mostly I/O (and now
        and then a checkpoint), can then run on the writer thread without holding up the loop.
        """
        with self._closing_on_failure():
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:
                if err.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise Busy(str(err)) from err
                raise
            with _rolled_back_on_failure(conn):
                applied = _write_each(conn, sql, records)
        return applied

    def commit(self) -> None:
        """Commit what :meth:`begin_now` wrote (any thread); the file check comes first."""
        conn = self._conn
        if conn is None or not conn.in_transaction:
            raise StoreError("write", "no transaction to commit")  # a bug of the caller
        with self._closing_on_failure(), _rolled_back_on_failure(conn):
            self._check_file()
            conn.execute("COMMIT")


@contextlib.contextmanager
def _rolled_back_on_failure(conn: sqlite3.Connection) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _encode(sql: Statements, shape: Shape, rows: Sequence[tuple[Any, ...]]) -> str | None:
    return json.dumps(sql.driver_rows(shape, rows), separators=(",", ":")) if rows else None


class Sorted:
    """A batch's rows by table, in foreign-key order (experiments sorted: no deadlocks)."""

    def __init__(self, records: Sequence[Record]) -> None:
        exps: dict[str, tuple[Any, ...]] = {}
        self.starts: list[tuple[Any, ...]] = []
        self.attempts: list[tuple[Any, ...]] = []
        self.artifacts: list[tuple[Any, ...]] = []
        self.checkpoints: list[tuple[Any, ...]] = []
        self.finishes: list[tuple[Any, ...]] = []
        for rec in records:
            op = rec.op
            if op == ATTEMPT:
                self.attempts.append(rec.row)
            elif op == START:
                assert rec.experiment is not None
                exps[rec.experiment[0]] = rec.experiment
                self.starts.append(rec.row)
            elif op == FINISH:
                self.finishes.append(rec.row)
            elif op == ARTIFACT:
                self.artifacts.append(rec.row)
            elif op == CHECKPOINT:
                self.checkpoints.append(rec.row)
        self.experiments = [exps[k] for k in sorted(exps)]

    def tables(self) -> tuple[list[tuple[Any, ...]], ...]:
        """The rows in ``statements`` order: experiments, runs, attempts, artifacts,
        checkpoints, finishes."""
        return (self.experiments, self.starts, self.attempts, self.artifacts, self.checkpoints,
                self.finishes)  # fmt: skip

    @property
    def count(self) -> int:
        return (len(self.experiments) + len(self.starts) + len(self.attempts)
                + len(self.artifacts) + len(self.checkpoints) + len(self.finishes))  # fmt: skip


def _write(conn: sqlite3.Connection, sql: Statements, records: Sequence[Record]) -> Applied:
    rows = Sorted(records)
    before = conn.total_changes
    conn.execute(_WRITE, (
        _encode(sql, EXPERIMENTS, rows.experiments), _encode(sql, RUNS, rows.starts),
        _encode(sql, ATTEMPTS, rows.attempts), _encode(sql, ARTIFACTS, rows.artifacts),
        _encode(sql, CHECKPOINTS, rows.checkpoints), _encode(sql, FINISHES, rows.finishes),
    ))  # fmt: skip
    if conn.total_changes - before == rows.count:
        return Applied()  # every row went in: no start met a stored run, every finish found one
    return _owners(conn, sql, rows)


def statements(sql: Statements) -> tuple[str, ...]:
    """The statement for each of ``Sorted.tables``, in the same order."""
    return (sql.upsert_experiments, sql.insert_runs, sql.insert_attempts, sql.upsert_artifacts,
            sql.insert_checkpoints, sql.finish_runs)  # fmt: skip


SHAPES: Final = (EXPERIMENTS, RUNS, ATTEMPTS, ARTIFACTS, CHECKPOINTS, FINISHES)  # as Sorted


def _write_each(conn: sqlite3.Connection, sql: Statements, records: Sequence[Record]) -> Applied:
    rows = Sorted(records)
    before = conn.total_changes
    for statement, shape, values in zip(statements(sql), SHAPES, rows.tables(), strict=True):
        if values:
            conn.executemany(statement, sql.driver_rows(shape, values))
    if conn.total_changes - before == rows.count:
        return Applied()
    return _owners(conn, sql, rows)


def owners_of(sql: Statements, rows: Sorted) -> tuple[dict[str, tuple[Any, ...]], set[str], Any]:
    """What a batch's owner check needs: this batch's starts by id with their (host, pid,
    started_at), the ids it finishes, and the parameter of ``sql.select_owners`` for them all."""
    ours = owner_keys(sql.driver_rows(RUNS, rows.starts))
    finished = {r[-1] for r in rows.finishes}
    return ours, finished, sql.id_list([*ours, *finished])


def _owners(conn: sqlite3.Connection, sql: Statements, rows: Sorted) -> Applied:
    ours, finished, param = owners_of(sql, rows)
    return owners_found(ours, finished, conn.execute(sql.select_owners, (param,)))
