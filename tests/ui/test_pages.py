"""The run browser's pages over real HTTP, on a store filled by real runs."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from pathlib import Path

import httpx
import structlog.testing

from crucible.ui.config import UiSettings
from tests.ui.conftest import served
from tests.ui.fill import HOSTILE, Filled


def rows_of(html: str, table_class: str) -> list[str]:
    """The text of each body row of the first table with ``table_class``."""
    table = html.split(f'class="grid {table_class}', 1)[1].split("</table>", 1)[0]
    body = table.split("<tbody>", 1)[1]
    rows = re.findall(r"<tr\b[^>]*>(.*?)</tr>", body, flags=re.S)
    return [re.sub(r"<[^>]+>", " ", row) for row in rows]


async def test_runs_page_lists_every_run_with_chosen_metric_columns(
    client: httpx.AsyncClient, filled: tuple[Path, Filled]
) -> None:
    _, ids = filled
    page = await client.get("/", params={"metric": "score,eval.accuracy"})
    assert page.status_code == 200
    html = page.text
    assert "18 matching" in html
    for run_id in (ids.retried, ids.failed, ids.reported):
        assert f'title="{run_id}"' in html
    assert '<th class="right metric">' in html and "eval.accuracy" in html
    failed_row = next(r for r in rows_of(html, "runs") if ids.failed in r)
    assert "failed" in failed_row and "1.5" in failed_row  # its score column


async def test_runs_page_filters_sorts_and_paginates(client: httpx.AsyncClient) -> None:
    sweep = await client.get("/", params={"batch": "sweep-1", "sort": "metric:score"})
    scores = [float(m) for m in re.findall(r'data-full="([0-9.]+)"', sweep.text)]
    assert "6 matching" in sweep.text and scores == []  # no metric columns chosen
    sweep = await client.get(
        "/", params={"batch": "sweep-1", "sort": "metric:score", "order": "asc", "metric": "score"}
    )
    scores = [float(m) for m in re.findall(r'data-full="([0-9.]+)"', sweep.text)]
    assert scores == sorted(scores) and len(scores) == 6
    failed = await client.get("/", params={"status": "failed"})
    assert "1 matching" in failed.text and "failed-run" in failed.text
    text = await client.get("/", params={"q": "WENT WRONG"})  # searches error messages too
    assert "1 matching" in text.text
    first = await client.get("/", params={"per": 5})
    second = await client.get("/", params={"per": 5, "page": 2})
    assert "page 1 of 4" in first.text and "page 2 of 4" in second.text
    ids_1 = set(re.findall(r'href="/run\?id=([^"]+)"', first.text))
    ids_2 = set(re.findall(r'href="/run\?id=([^"]+)"', second.text))
    assert len(ids_1) == len(ids_2) == 5 and not ids_1 & ids_2
    beyond = await client.get("/", params={"page": 10**30})
    assert beyond.status_code == 200 and "No runs match" in beyond.text
    bad = await client.get("/", params={"status": "nope"})
    assert bad.status_code == 400 and "unknown status" in bad.text


async def test_run_page_shows_stages_in_order_retries_and_metrics(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/run", params={"id": "retried-run"})
    assert page.status_code == 200
    attempts = rows_of(page.text, "attempts")
    assert [r.split()[:4] for r in attempts] == [
        ["0", "ui_flaky", "1", "failure"],
        ["0", "ui_flaky", "2", "success"],
        ["1", "ui_score", "1", "success"],
    ]
    assert "RuntimeError: flaky attempt 1" in page.text
    svg = page.text.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert svg.count('class="mark"') == 3 and 'data-result="failure"' in svg
    # metrics: rounded for display, the full value kept for hover and copy
    assert 'title="0.181818" data-full="0.181818">0.1818<' in page.text
    assert "ui_flaky:retries" in page.text  # the configuration, by option path
    assert "data-live" not in page.text  # finished runs do not poll


async def test_failed_run_shows_its_error_escaped(client: httpx.AsyncClient) -> None:
    page = await client.get("/run", params={"id": "failed-run"})
    assert "Failure in stage <code>ui_boom</code>" in page.text
    assert "ValueError: went wrong &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text


async def test_html_in_run_ids_and_metric_names_renders_as_text(
    client: httpx.AsyncClient,
) -> None:
    listing = await client.get("/", params={"metric": HOSTILE})
    run = await client.get("/run", params={"id": HOSTILE})
    for html in (listing.text, run.text):
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert run.status_code == 200 and "2.5" in run.text


async def test_compare_shows_configuration_and_metric_differences(
    client: httpx.AsyncClient, filled: tuple[Path, Filled]
) -> None:
    _, ids = filled
    a, b = ids.sweep_runs[0], ids.sweep_runs[-1]  # alpha 0.1/depth 1 and alpha 0.3/depth 2
    page = await client.get("/compare", params=[("run", a), ("run", b)])
    assert page.status_code == 200
    config = rows_of(page.text, "compare config-diff")
    assert [r.split()[0] for r in config] == ["ui_score.alpha", "ui_score.depth"]
    score = next(r for r in rows_of(page.text, "compare metrics-diff") if "score" in r.split())
    assert score.split() == ["score", "1.5", "4", "+2.5"]
    one = await client.get("/compare", params={"run": a})
    assert one.status_code == 400
    unknown = await client.get("/compare", params=[("run", a), ("run", "nope")])
    assert unknown.status_code == 404


async def test_batch_page_marks_the_best_point_and_exports_csv(client: httpx.AsyncClient) -> None:
    page = await client.get("/batch", params={"id": "sweep-1", "by": "score"})
    assert page.status_code == 200
    rows = rows_of(page.text, "sweep")
    assert len(rows) == 6
    assert rows[0].split()[0] == "★" and "0.3" in rows[0] and "4" in rows[0].split()
    svg = page.text.split('class="chart-box sweep-plot">', 1)[1].split("</svg>", 1)[0]
    assert svg.count('class="mark"') == 6 and 'class="best"' in svg
    lowest = await client.get("/batch", params={"id": "sweep-1", "by": "loss", "direction": "min"})
    assert "Best loss (lowest)" in lowest.text
    three = await client.get("/batch", params={"id": "sweep-3"})
    assert "chart-parallel" in three.text
    export = await client.get("/batch.csv", params={"id": "sweep-1"})
    assert export.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(export.text)))
    assert len(table) == 6
    assert {(r["matrix.ui_score.alpha"], r["matrix.ui_score.depth"]) for r in table} == {
        (a, d) for a in ("0.1", "0.2", "0.3") for d in ("1", "2")
    }
    assert {"score", "loss", "eval.accuracy", "status", "run_id"} <= set(table[0])
    missing = await client.get("/batch", params={"id": "nope"})
    assert missing.status_code == 404


async def test_batches_page_and_live_json(client: httpx.AsyncClient) -> None:
    batches = await client.get("/batches")
    assert "sweep-1" in batches.text and "sweep-3" in batches.text
    live = await client.get("/run.json", params={"id": "retried-run"})
    data = live.json()
    assert data["status"] == "completed" and data["running"] is False
    assert "ui_flaky" in data["html"]


async def test_nothing_writes(client: httpx.AsyncClient) -> None:
    for path in ("/", "/run", "/compare", "/batch", "/artifact"):
        response = await client.post(path, content=b"x")
        assert response.status_code == 405, path


async def test_jaeger_link_only_when_a_base_url_is_configured(
    filled: tuple[Path, Filled],
) -> None:
    db, _ = filled
    plain = UiSettings(store_url=str(db))
    linked = UiSettings(store_url=str(db), jaeger_url="http://jaeger.local:16686/")
    with served(plain) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/run", params={"id": "retried-run"})
        assert "open in Jaeger" not in page.text
    with served(linked) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/run", params={"id": "retried-run"})
        trace = re.search(r"<code>([0-9a-f]{32})</code>", page.text)
        assert trace is not None
        assert f'href="http://jaeger.local:16686/trace/{trace.group(1)}"' in page.text
        async with httpx.AsyncClient(base_url=url) as http:  # untraced: no trace to open
            untraced = await http.get("/run", params={"id": "failed-run"})
        assert untraced.status_code == 200 and "open in Jaeger" not in untraced.text


async def test_a_broken_store_is_a_503_page_not_a_crash(filled: tuple[Path, Filled]) -> None:
    db, _ = filled
    with served(UiSettings(store_url=str(db))) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/")).status_code == 200
            with sqlite3.connect(db) as conn:  # another process breaks the store underneath
                conn.execute("DROP TABLE stage_attempts")
                conn.execute("DROP TABLE artifacts")
                conn.execute("DROP TABLE runs")
            with structlog.testing.capture_logs() as logs:
                broken = await http.get("/")
    assert broken.status_code == 503
    assert "The run store could not be read" in broken.text
    for secret in (str(db), db.name, "sqlite", "no such table", "OperationalError"):
        assert secret not in broken.text, secret  # where the store is and what the driver said
    logged = [e for e in logs if e["event"] == "ui.store_failed"]
    assert len(logged) == 1 and "no such table" in logged[0]["error"]  # kept for the operator


async def test_text_utf8_cannot_hold_is_shown_not_a_500(tmp_path: Path) -> None:
    from crucible import Context, Experiment, Registry, StageDef, run, stage
    from crucible.store import RunStore

    @stage("half_surrogate", description="A metric no UTF-8 can hold", register=False)
    async def half(ctx: Context) -> Context:
        return ctx.put_metric("tag", "a\ud800b")

    db = tmp_path / "runs.db"
    async with RunStore(db) as store:
        exp = Experiment(id="surrogate", pipeline=[StageDef(name="half_surrogate")])
        await run(exp, registry=Registry([half]), store=store, run_id="r-half", batch_id="b-half")
    with served(UiSettings(store_url=str(db), port=0)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for path in ("/run?id=r-half", "/run.json?id=r-half", "/?metric=tag",
                         "/batch?id=b-half", "/batch.csv?id=b-half"):  # fmt: skip
                answer = await http.get(path)
                assert answer.status_code == 200, (path, answer.status_code)
            assert "a\ufffdb" in (await http.get("/run?id=r-half")).text
