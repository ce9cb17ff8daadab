"""Hostile query strings over real HTTP: bounded pages, 400s naming the parameter, no leaks."""

from __future__ import annotations

from pathlib import Path

import httpx

from crucible.ui.params import MAX_REPEATED, MAX_TARGET_BYTES, MAX_VALUE_CHARS
from tests.ui.fill import Filled

LEAKS = ("OperationalError", "JSON path", "Traceback", "ui runs failed")


def assert_refused(response: httpx.Response, *words: str) -> None:
    """A short 400 HTML page that says ``words`` and nothing about the store."""
    assert response.status_code == 400, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert len(response.content) < 4000
    for word in words:
        assert word in response.text, word
    for leak in LEAKS:
        assert leak not in response.text, leak


async def test_thousands_of_metric_columns_are_refused_quickly_and_briefly(
    client: httpx.AsyncClient,
) -> None:
    query = "&".join(f"metric=m{i}" for i in range(4000))  # about 50 KB
    huge = await client.get(f"/?{query}")
    assert_refused(huge, "too long", f"{MAX_TARGET_BYTES:,} bytes", "metric", "4,000 values")
    assert huge.headers["x-content-type-options"] == "nosniff"  # still behind the gate
    assert huge.elapsed.total_seconds() < 2


async def test_metric_columns_are_bounded_by_count(
    client: httpx.AsyncClient, filled: tuple[Path, Filled]
) -> None:
    names = [f"m{i}" for i in range(MAX_REPEATED + 1)]
    most = await client.get("/", params=[("metric", n) for n in names[:-1]])
    assert most.status_code == 200 and most.text.count('<th class="right metric">') == MAX_REPEATED
    one_more = await client.get("/", params={"metric": ",".join(names)})  # the comma form counts
    assert_refused(one_more, "metric", f"at most {MAX_REPEATED}", f"got {MAX_REPEATED + 1}")
    repeats = await client.get("/", params=[("metric", "score")] * 50)  # one column, not 50
    assert repeats.status_code == 200 and repeats.text.count('<th class="right metric">') == 1
    _, ids = filled
    runs = [("run", r) for r in (*ids.sweep_runs, ids.failed, ids.retried, ids.reported)]
    compare = await client.get("/compare", params=runs * 3 + [("run", f"r{i}") for i in range(12)])
    assert_refused(compare, "run", f"at most {MAX_REPEATED}")
    batch = await client.get(
        "/batch", params=[("id", ids.sweep_batch)] + [("metric", n) for n in names]
    )
    assert_refused(batch, "metric", f"at most {MAX_REPEATED}")


async def test_values_are_bounded_by_length(client: httpx.AsyncClient) -> None:
    for name in ("q", "batch", "experiment", "metric", "sort"):
        long = await client.get("/", params={name: "x" * (MAX_VALUE_CHARS + 1)})
        assert_refused(long, name, f"at most {MAX_VALUE_CHARS} characters")
        assert "x" * 50 not in long.text  # the value is not echoed back
    fits = await client.get("/", params={"q": "x" * MAX_VALUE_CHARS})
    assert fits.status_code == 200 and "No runs match" in fits.text
    run = await client.get("/run", params={"id": "r" * 1000})
    assert_refused(run, "id")


async def test_metric_names_no_store_can_look_up_are_a_400_naming_the_parameter(
    client: httpx.AsyncClient, filled: tuple[Path, Filled]
) -> None:
    nul = await client.get("/?sort=metric:%00")  # was a 503 with the SQL error and the path
    assert_refused(nul, "sort", "NUL")
    for bad in ('a"b', "a\\b", "a\nb", "a\x1fb"):
        sort = await client.get("/", params={"sort": f"metric:{bad}"})
        assert_refused(sort, "sort", "metric name")
        column = await client.get("/", params={"metric": bad})
        assert_refused(column, "metric", "metric name")
    _, ids = filled
    by = await client.get("/batch", params={"id": ids.sweep_batch, "by": "a\x00"})
    assert_refused(by, "by")
    by = await client.get("/batch", params={"id": ids.sweep_batch, "by": 'a"b'})
    assert_refused(by, "by", "metric name")
    for name in ("experiment", "status", "batch", "q"):
        assert_refused(await client.get("/", params={name: "a\x00b"}), name, "NUL")
    # Names a store can look up still sort: dots, spaces, quotes of the other kind, HTML.
    for fine in ("eval.accuracy", "my metric", "it's", "<b>x</b>"):
        page = await client.get("/", params={"sort": f"metric:{fine}", "metric": fine})
        assert page.status_code == 200, fine
