"""The run store's tables (SQLAlchemy Core) and the UTC datetime type they share.

One schema serves SQLite and PostgreSQL: JSON columns become JSONB on PostgreSQL, and
auto-increment ids use SQLite's rowid alias there. Opening a store adds whatever these tables have
and the database lacks (``migrate``), so a change here must be additive: new tables, new indexes,
and new columns that are nullable or have a ``server_default``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

__all__ = [
    "JsonDocument",
    "UTCDateTime",
    "add_dialect_indexes",
    "artifacts",
    "checkpoints",
    "experiments",
    "metadata",
    "runs",
    "stage_attempts",
]


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime with microseconds, on SQLite (naive text) and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass a timezone-aware one")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        if when.tzinfo is None:
            return when.replace(tzinfo=dt.UTC)
        return when.astimezone(dt.UTC)


class JsonDocument(sa.TypeDecorator[Any]):
    """JSON, stored as JSONB on PostgreSQL (whose dialect loads only when a store uses it)."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


_JSON = JsonDocument()
_AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite rowid alias

metadata = sa.MetaData()

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("definition", _JSON, nullable=False),
    sa.Column("owner", sa.String(255)),
    sa.Column("tags", _JSON, nullable=False),
    sa.Column("metadata", _JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("experiment_id", sa.String(255), sa.ForeignKey("experiments.id"), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("trace_id", sa.String(64)),
    sa.Column("batch_id", sa.String(255)),
    sa.Column("metrics", _JSON, nullable=False),
    sa.Column("outputs", _JSON, nullable=False),
    sa.Column("assigns", _JSON, nullable=False),
    sa.Column("failure_stage", sa.String(255)),
    sa.Column("failure_message", sa.Text()),
    sa.Column("error_type", sa.String(255)),
    sa.Column("owner_pid", sa.Integer()),
    sa.Column("owner_host", sa.String(255)),
    # What the run ran, so it can be looked up, compared, rerun and resumed (all nullable:
    # runs stored before these columns existed have none of them).
    sa.Column("span_id", sa.String(32)),
    sa.Column("config", _JSON),
    sa.Column("start_assigns", _JSON),
    sa.Column("versions", _JSON),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("git_dirty", sa.Boolean()),
    sa.Column("rerun_of", sa.String(255)),
    sa.Column("resumed_from", sa.String(255)),
    sa.Column("source", sa.Text()),  # the experiment file it was loaded from, if any
    sa.Column("trace_exported", sa.Boolean()),  # its spans went to a provider (False: untraced)
    sa.Index("ix_runs_experiment_id", "experiment_id"),
    sa.Index("ix_runs_status", "status"),
    sa.Index("ix_runs_batch_id", "batch_id"),
    sa.Index("ix_runs_started_at", "started_at"),
)
_PREFIX_INDEX = "ix_runs_id_prefix"


def add_dialect_indexes(dialect: str) -> None:
    """Add to the tables the indexes that only ``dialect``'s databases have, once.

    Run ids by their first characters (crucible.store.prefix), in any collation: PostgreSQL
    only (on SQLite the primary key serves that range already). Defined on first use by a
    PostgreSQL store, not at import: its ``postgresql_ops`` option loads SQLAlchemy's
    PostgreSQL dialect, ~25 ms of every ``crucible`` command's start.
    """
    if dialect != "postgresql" or any(i.name == _PREFIX_INDEX for i in runs.indexes):
        return
    sa.Index(
        _PREFIX_INDEX,
        runs.c.id,
        postgresql_ops={"id": "varchar_pattern_ops"},
        info={"dialect": "postgresql"},
    ).ddl_if(dialect="postgresql")


stage_attempts = sa.Table(
    "stage_attempts",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.String(255), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("stage", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255)),
    sa.Column("stage_index", sa.Integer()),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("result", sa.String(32), nullable=False),
    sa.Column("start_ns", sa.BigInteger(), nullable=False),
    sa.Column("end_ns", sa.BigInteger(), nullable=False),
    sa.Column("duration_s", sa.Float(), nullable=False),
    sa.Column("span_id", sa.String(32)),
    sa.Column("parent_span_id", sa.String(32)),
    sa.Column("error_type", sa.String(255)),
    sa.Column("error_message", sa.Text()),
    sa.Column("events", _JSON, nullable=False),
    # One row per span: a journal replayed twice adds nothing (ON CONFLICT DO NOTHING). It also
    # serves lookups by run_id (its first column): a second index on run_id alone only made
    # every attempt's insert update one more b-tree (databases made before keep theirs).
    sa.Index("uq_stage_attempts_run_span", "run_id", "span_id", unique=True),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.String(255), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("location", sa.Text()),
    sa.Column("format", sa.String(64)),
    sa.Column("metadata", _JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_artifacts_type", "type"),
    # One artifact per name and run: recording it again replaces it (ON CONFLICT DO UPDATE).
    # Lookups by run_id use it too (see stage_attempts).
    sa.Index("uq_artifacts_run_name", "run_id", "name", unique=True),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.String(255), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("stage_index", sa.Integer(), nullable=False),
    sa.Column("stage", sa.String(255), nullable=False),
    sa.Column("state", _JSON, nullable=False),  # crucible.checkpoint.encode_context
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # One checkpoint per completed stage of a run: a retried commit or a journal replayed twice
    # adds nothing (ON CONFLICT DO NOTHING). Lookups by run_id use it too (databases made
    # before keep their index on run_id alone).
    sa.Index("uq_checkpoints_run_stage", "run_id", "stage_index", unique=True),
)
