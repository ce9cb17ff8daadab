"""``crucible runs show/diff/rerun`` find a run by the first characters of its id."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crucible import Context, Experiment
from crucible.store import RunStore
from tests.store.conftest import _pg_admin, pg_database, run_async

__all__ = ["pg_database"]  # the session's PostgreSQL database, for the store_url fixture

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
IDS = [
    "52286e9f-aaaa-4000-8000-000000000001",
    "52286e9f-bbbb-4000-8000-000000000002",
    "7c1e0d33-cccc-4000-8000-000000000003",
    "abcd_one",
    "abcdXtwo",
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store holding the runs of IDS: a SQLite file, or a reset PostgreSQL schema."""
    if request.param == "sqlite":
        url = str(tmp_path / "runs.db")
    else:
        url = request.getfixturevalue("pg_database")
        name = url.rsplit("/", 1)[1]
        run_async(lambda: _pg_admin("DROP SCHEMA public CASCADE; CREATE SCHEMA public", name))

    async def fill() -> None:
        exp = Experiment(id="ids")
        async with RunStore(url) as store:
            for n, run_id in enumerate(IDS):
                await store.start_run(exp, run_id)
                ctx = Context(experiment_id="ids", run_id=run_id, experiment=exp)
                await store.finish_run(run_id, "completed", context=ctx.put_metric("n", n))

    asyncio.run(fill())
    return url


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
    env |= {"PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "crucible", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


def test_show_and_diff_take_a_unique_prefix(tmp_path: Path, store_url: str) -> None:
    shown = cli(tmp_path, "runs", "show", "7c1e0d33", "--store", store_url, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == IDS[2]
    assert json.loads(cli(tmp_path, "runs", "show", "52286e9f-b", "--store", store_url,
                          "--json").stdout)["metrics"] == {"n": 1}  # fmt: skip
    whole = cli(tmp_path, "runs", "show", IDS[0], "--store", store_url, "--json")
    assert json.loads(whole.stdout)["run_id"] == IDS[0]  # an exact id always wins
    diff = cli(tmp_path, "runs", "diff", "7c1e", "52286e9f-a", "--store", store_url, "--json")
    assert diff.returncode == 0, diff.stderr
    assert [r["run_id"] for r in json.loads(diff.stdout)["runs"]] == [IDS[2], IDS[0]]
    same = cli(tmp_path, "runs", "diff", "7c1e", IDS[2], "--store", store_url)
    assert same.returncode == 2 and "two or more different run ids" in same.stderr


def test_an_ambiguous_prefix_lists_its_candidates(tmp_path: Path, store_url: str) -> None:
    for args in (["runs", "show", "52286e9f"], ["runs", "diff", "7c1e", "52286e9f"],
                 ["runs", "rerun", "52286e9f"], ["runs", "resume", "5228"]):  # fmt: skip
        done = cli(tmp_path, *args, "--store", store_url)
        assert done.returncode == 2, (args, done.stderr)
        assert "is ambiguous" in done.stderr and IDS[0] in done.stderr and IDS[1] in done.stderr
        assert IDS[2] not in done.stderr


def test_short_unknown_and_wildcard_prefixes_match_nothing(tmp_path: Path, store_url: str) -> None:
    cases = {
        "522": "unknown run id '522' (a short id needs at least 4 characters)",
        "9999": "unknown run id '9999'",
        "abcd%": "unknown run id 'abcd%'",  # % and _ are plain characters, not wildcards
        "abc_X": "unknown run id 'abc_X'",
    }
    for text, message in cases.items():
        done = cli(tmp_path, "runs", "show", text, "--store", store_url)
        assert done.returncode == 2 and message in done.stderr, (text, done.stderr)
    one = cli(tmp_path, "runs", "show", "abcd_", "--store", store_url, "--json")
    assert json.loads(one.stdout)["run_id"] == "abcd_one"  # not abcdXtwo too: not ambiguous
    unknown = cli(tmp_path, "runs", "diff", "9999", "8888", "--store", store_url)
    assert "unknown run id '9999', '8888'" in unknown.stderr
    exact = cli(tmp_path, "runs", "show", "abcd_one", "--store", store_url, "--json")
    assert json.loads(exact.stdout)["run_id"] == "abcd_one"
