"""Looking runs up by the first characters of their id, on a SQLite file and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from crucible import Experiment
from crucible.store import RunStore
from crucible.store.prefix import prefix_match, successor
from crucible.store.schema import runs

IDS = [
    "52286e9f-0000-4000-8000-000000000001",
    "52286e9f-1111-4000-8000-000000000002",
    "52287aaa-0000-4000-8000-000000000003",
    "abc%_x/1",  # LIKE's wildcards and the escape character, stored as plain text
    "abcd",
    "ABCD-upper",
    "zz\U0010ffff\U0010ffffend",
]


async def _fill(store: RunStore) -> None:
    exp = Experiment(id="prefix-exp")
    for run_id in IDS:
        await store.start_run(exp, run_id)
    await store.flush()


async def test_a_prefix_finds_exactly_the_ids_that_start_with_it(store: RunStore) -> None:
    await _fill(store)
    assert await store.find_run_ids("52286e9f") == IDS[:2]
    assert await store.find_run_ids("52286e9f-1") == [IDS[1]]
    assert await store.find_run_ids("5228") == IDS[:3]
    assert await store.find_run_ids("5228", limit=2) == IDS[:2]
    assert await store.find_run_ids("52289") == []


async def test_the_whole_id_comes_first_and_case_matters(store: RunStore) -> None:
    await _fill(store)
    assert await store.find_run_ids("abc") == ["abcd", "abc%_x/1"]  # shortest first
    assert await store.find_run_ids("abcd") == ["abcd"]  # not ABCD-upper: case-sensitive
    assert await store.find_run_ids("ABC") == ["ABCD-upper"]


async def test_like_wildcards_in_the_prefix_are_plain_characters(store: RunStore) -> None:
    await _fill(store)
    assert await store.find_run_ids("abc%") == ["abc%_x/1"]
    assert await store.find_run_ids("abc_") == []  # '_' would match the 'd' of abcd
    assert await store.find_run_ids("abc%_x/") == ["abc%_x/1"]
    assert await store.find_run_ids("%") == []
    assert await store.find_run_ids("5228_") == []


async def test_a_prefix_ending_in_the_last_code_point_still_matches(store: RunStore) -> None:
    await _fill(store)
    assert await store.find_run_ids("zz\U0010ffff") == [IDS[-1]]
    assert await store.find_run_ids("zz\U0010ffff\U0010ffff") == [IDS[-1]]


def test_successor_is_the_least_string_above_every_extension() -> None:
    assert successor("52286e9f") == "52286e9g"
    assert successor("a9") == "a:"
    assert successor("a\ud7ff") == "a\ue000"  # surrogates skipped
    assert successor("a\U0010ffff") == "b"
    assert successor("\U0010ffff") is None
    with pytest.raises(ValueError, match="empty prefix"):
        prefix_match(runs.c.id, "", "sqlite")


async def test_the_lookup_is_served_by_an_index(store: RunStore) -> None:
    await _fill(store)
    cond = prefix_match(runs.c.id, "52286e9f", store.dialect)
    query = sa.select(runs.c.id).where(cond)
    async with store.reader() as conn:
        sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if store.dialect == "sqlite":
            plan = " ".join(
                str(r[-1]) for r in await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}"))
            )
            assert "SEARCH runs USING" in plan and "(id>? AND id<?)" in plan, plan
        else:
            await conn.execute(sa.text("SET enable_seqscan = off"))  # a tiny table: no scan
            plan = " ".join(str(r[0]) for r in await conn.execute(sa.text(f"EXPLAIN {sql}")))
            assert "Index Only Scan using ix_runs_id_prefix" in plan, plan
            assert "~>=~" in plan and "~<~" in plan, plan
