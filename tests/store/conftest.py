"""Store fixtures: each test gets a fresh SQLite file and, when reachable, a reset PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from crucible.store import RunStore
from tests.support.missing import missing_service

PG_HOST, PG_PORT = "127.0.0.1", 5432


async def _pg_admin(sql: str, database: str = "postgres") -> None:
    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", database=database, timeout=5
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def run_async(fn: Callable[[], Awaitable[None]]) -> None:
    """Run admin coroutines on a private loop in a worker thread, away from the test's loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, fn()).result()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A uniquely named PostgreSQL database for this test session, dropped at the end."""
    name = f"crucible_test_{secrets.token_hex(6)}"
    try:
        run_async(lambda: _pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        missing_service(f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable ({exc!r})")
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        run_async(lambda: _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file (plain path) or a reset PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    return reset_schema(request.getfixturevalue("pg_database"))


def reset_schema(pg_database: str) -> str:
    """``pg_database`` with its schema reset: nothing an earlier test left."""
    name = pg_database.rsplit("/", 1)[1]
    run_async(lambda: _pg_admin("DROP SCHEMA public CASCADE; CREATE SCHEMA public", name))
    return pg_database


@pytest.fixture
def pg_fresh(pg_database: str) -> str:
    """The session's PostgreSQL database with its schema reset."""
    return reset_schema(pg_database)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[RunStore]:
    async with RunStore(store_url) as s:
        yield s
