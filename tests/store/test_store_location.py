"""Where a SQLite store may live: an existing folder, or the default .crucible/ it makes."""

from __future__ import annotations

from pathlib import Path

import pytest

import crucible
from crucible import Experiment
from crucible.store import RunStore, StoreError, normalize_url


def test_a_sqlite_file_in_a_missing_folder_is_refused_at_once(tmp_path: Path) -> None:
    target = tmp_path / "typo" / "deeper" / "runs.db"
    with pytest.raises(StoreError) as caught:
        RunStore(target)
    message = str(caught.value)
    assert str(target) in message and f"its folder {target.parent} does not exist" in message
    assert not (tmp_path / "typo").exists()
    with pytest.raises(StoreError, match="does not exist"):
        RunStore(f"sqlite:///{target}")  # the URL form is checked the same way


def test_a_file_where_the_folder_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a folder", encoding="utf-8")
    with pytest.raises(StoreError, match="is not a folder"):
        RunStore(tmp_path / "plain" / "runs.db")


async def test_an_existing_folder_gets_its_database_file(tmp_path: Path) -> None:
    async with RunStore(tmp_path / "runs.db") as store:
        await store.start_run(Experiment(id="e"), "r1")
    assert (tmp_path / "runs.db").is_file()


async def test_the_default_location_given_by_path_makes_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with RunStore(".crucible/runs.db") as store:  # as --store or CRUCIBLE_STORE_URL give it
        await store.start_run(Experiment(id="e"), "r1")
    assert (tmp_path / ".crucible" / "runs.db").is_file()
    elsewhere = tmp_path / "other" / ".crucible" / "runs.db"  # only the working directory's
    with pytest.raises(StoreError, match="does not exist"):
        RunStore(elsewhere)


def test_memory_and_postgresql_urls_have_no_folder_to_check() -> None:
    RunStore("sqlite://")
    RunStore("sqlite:///:memory:")
    RunStore("postgresql://postgres@127.0.0.1:5432/none")


def test_a_store_shows_no_password_of_its_url() -> None:
    for url, shown in (
        ("postgresql://u:pw-in-userinfo@127.0.0.1/db", "postgresql+asyncpg://u:***@127.0.0.1/db"),
        ("postgresql://u@127.0.0.1/db?sslmode=disable&password=pw-in-query",
         "postgresql+asyncpg://u@127.0.0.1/db?password=***&ssl=disable"),  # sorted, asyncpg names
    ):  # fmt: skip
        store = RunStore(url)
        assert store.url == shown and "pw-in" not in repr(store)
        assert "pw-in" in store.url_for_workers()  # workers must still connect


async def test_a_libpq_sslmode_in_a_postgresql_url_is_understood(pg_database: str) -> None:
    # libpq URLs say sslmode=; asyncpg refused the name with a TypeError.
    async with RunStore(f"{pg_database}?sslmode=disable") as store:
        ctx = await crucible.run(Experiment(id="libpq-url"), store=store)
        stored = await store.get_run(ctx.run_id)
        assert stored is not None and stored.status == "completed"
    assert normalize_url(f"{pg_database}?sslmode=require").query == {"ssl": "require"}
