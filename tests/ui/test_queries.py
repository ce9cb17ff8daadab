"""The run browser's queries on SQLite and PostgreSQL, over a store filled by real runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crucible import Context, Experiment
from crucible.store import RunStore
from crucible.ui import queries
from crucible.ui.queries import RunQuery
from tests.ui.fill import HOSTILE, Filled, fill


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[tuple[RunStore, Filled]]:
    async with RunStore(store_url) as s:
        yield s, await fill(s, tmp_path)


async def page(store: RunStore, **kw: object) -> queries.RunPage:
    async with store.reader("test") as conn:
        return await queries.run_page(conn, RunQuery(**kw))  # type: ignore[arg-type]


async def test_first_page_is_newest_first_with_flattened_metrics(
    store: tuple[RunStore, Filled],
) -> None:
    s, ids = store
    first = await page(s, per_page=4)
    assert first.total == 18 and first.pages == 5
    assert [r.run_id for r in first.rows] == [ids.hostile, ids.reported, ids.failed, ids.retried]
    failed = first.rows[2]
    assert failed.status == "failed" and failed.experiment_id == "failing"
    assert failed.metrics["eval.accuracy"] == pytest.approx(0.575)  # nested keys flattened
    assert failed.duration_s is not None and failed.duration_s >= 0
    rest = await page(s, per_page=4, page=5)
    assert len(rest.rows) == 2 and rest.query.page == 5


async def test_filters_combine(store: tuple[RunStore, Filled]) -> None:
    s, _ = store
    assert (await page(s, batch="sweep-1")).total == 6
    assert (await page(s, experiment="sweep3")).total == 8
    assert (await page(s, experiment="sweep3", batch="sweep-1")).total == 0
    failed = await page(s, status="failed")
    assert [r.run_id for r in failed.rows] == ["failed-run"]
    assert (await page(s, text="FLAKY")).total == 0  # a retry that succeeded left no error
    assert [r.run_id for r in (await page(s, text="went WRONG")).rows] == ["failed-run"]
    assert (await page(s, text="retried-")).total == 1
    assert (await page(s, text="%")).total == 0  # LIKE wildcards are escaped
    assert (await page(s, text="_")).total == 0


async def test_sorting_by_a_metric_uses_numbers_only_and_puts_the_rest_last(
    store: tuple[RunStore, Filled],
) -> None:
    s, _ = store
    best = await page(s, sort="metric:score", per_page=18)
    scores = [r.metrics.get("score") for r in best.rows]
    numbers = [v for v in scores if v is not None]
    assert numbers == sorted(numbers, reverse=True) and len(numbers) == 16
    assert scores[-2:] == [None, None]  # runs without the metric come last
    asc = await page(s, sort="metric:eval.accuracy", descending=False, per_page=3)
    assert [r.metrics["eval.accuracy"] for r in asc.rows] == sorted(
        r.metrics["eval.accuracy"] for r in asc.rows
    )
    hostile = await page(s, sort=f"metric:{HOSTILE}", per_page=1)
    assert hostile.rows[0].run_id == HOSTILE  # odd metric names sort too


async def test_a_string_metric_never_breaks_a_numeric_sort(store: tuple[RunStore, Filled]) -> None:
    s, ids = store
    exp = Experiment(id="strings")
    await s.start_run(exp, "s1")
    ctx = Context(experiment_id="strings", run_id="s1", experiment=exp)
    await s.finish_run("s1", "completed", context=ctx.put_metric("score", "n/a"))
    result = await page(s, sort="metric:score", per_page=50)
    assert {r.run_id for r in result.rows[-3:]} == {"s1", ids.reported, ids.hostile}
    assert result.rows[0].metrics["score"] == max(
        r.metrics["score"] for r in result.rows if r.run_id != "s1" and "score" in r.metrics
    )


@pytest.mark.parametrize("sort", ["duration", "status", "experiment", "batch", "run", "started"])
async def test_every_column_sorts_both_ways(store: tuple[RunStore, Filled], sort: str) -> None:
    s, _ = store
    down = [r.run_id for r in (await page(s, sort=sort, per_page=18)).rows]
    up = [r.run_id for r in (await page(s, sort=sort, descending=False, per_page=18)).rows]
    assert sorted(down) == sorted(up) and len(down) == 18
    if sort == "run":
        assert down == sorted(down, reverse=True) and up == sorted(up)


def test_bad_queries_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown status"):
        RunQuery(status="done")
    with pytest.raises(ValueError, match="unknown sort"):
        RunQuery(sort="metric:")
    assert RunQuery(page=-3, per_page=10_000).page == 1
    assert RunQuery(per_page=10_000).per_page == queries.MAX_PER_PAGE


async def test_batches_and_their_points(store: tuple[RunStore, Filled]) -> None:
    s, ids = store
    async with s.reader("test") as conn:
        batches = await queries.recent_batches(conn)
        points = await queries.batch_points(conn, "sweep-1")
        experiments = await queries.experiment_ids(conn)
    assert [b.batch_id for b in batches] == ["sweep-3", "sweep-1"]
    assert batches[1].runs == batches[1].completed == 6 and batches[1].experiment_ids == ("sweep",)
    assert [p.run_id for p in points] == list(ids.sweep_runs)
    assert [p.matrix for p in points] == [
        {"ui_score.alpha": a, "ui_score.depth": d} for a in (0.1, 0.2, 0.3) for d in (1, 2)
    ]
    assert points[-1].metrics["score"] == pytest.approx(4.0)
    assert experiments == sorted(["sweep", "sweep3", "retry", "failing", "reporting", "hostile"])
