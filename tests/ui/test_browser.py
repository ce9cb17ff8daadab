"""The run browser in a real Chromium (Debian's, driven by Playwright) against ``python -m
crucible.ui`` on 127.0.0.1, over a store filled by real runs. Screenshots of every page go to
``test-artifacts/ui/``."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

import crucible
from crucible import Experiment, StageDef
from crucible.store import RunStore
from crucible.ui.charts import TimelineBar, timeline
from tests.support.missing import missing_service
from tests.ui.conftest import free_port
from tests.ui.fill import Filled, fill
from tests.ui.stages import REGISTRY

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"


def in_worker(make: Callable[[], Coroutine[Any, Any, Filled]]) -> Filled:
    """Run ``make()`` on a private loop in a worker thread (away from pytest's loops)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Filled]]:
    """(base URL, store file, ids): a store filled by real runs, served by ``python -m
    crucible.ui`` from its folder."""
    folder = tmp_path_factory.mktemp("ui-site")
    db = folder / "runs.db"

    async def make() -> Filled:
        async with RunStore(db) as store:
            return await fill(store, folder)

    ids = in_worker(make)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "crucible.ui", "--store", str(db), "--port", str(port)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CRUCIBLE_UI_TOKEN": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "crucible ui did not answer within 60 s"
            time.sleep(0.1)
        yield url, db, ids
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        missing_service(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, site: tuple[str, Path, Filled]) -> Iterator[Page]:
    """A fresh page that fails the test on any script error, dialog or blocked resource."""
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=site[0])
    tab = context.new_page()
    tab.on("pageerror", lambda err: problems.append(f"script error: {err}"))
    tab.on("dialog", lambda d: problems.append(f"dialog opened: {d.message}"))
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    assert problems == []


def shot(page: Page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def test_runs_page_lists_the_runs_and_picks_metric_columns(page: Page) -> None:
    page.goto("/")
    assert len(texts(page, "table.runs tbody tr")) == 18
    assert "18 matching" in page.locator("h1").inner_text()
    page.locator("details.columns summary").click()
    page.get_by_label("score", exact=True).check()
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"metric=score"))
    assert "score" in texts(page, "table.runs thead th.metric")
    shot(page, "runs")


def test_a_click_opens_a_run_with_its_stages_in_order(page: Page) -> None:
    page.goto("/")
    page.get_by_role("link", name="retried-run").click()
    page.wait_for_url(re.compile(r"/run\?id=retried-run"))
    assert texts(page, "table.attempts td.stage-name") == ["ui_flaky", "ui_flaky", "ui_score"]
    assert texts(page, "table.attempts .result") == ["failure", "success", "success"]
    assert page.locator("svg.chart-timeline rect.mark").count() == 3
    shot(page, "run")


_OUTSIDE = """svg => {
  const width = svg.viewBox.baseVal.width;
  return [...svg.querySelectorAll("text")].map(t => t.getBBox())
    .filter(b => b.x < 0 || b.x + b.width > width).length;
}"""


def test_chart_labels_stay_inside_their_charts(page: Page) -> None:
    page.goto("/run?id=retried-run")
    chart = page.locator("svg.chart-timeline")
    assert chart.locator("text").count() > 3
    assert chart.evaluate(_OUTSIDE) == 0
    drawn, card = chart.bounding_box(), page.locator(".chart-box").first.bounding_box()
    assert drawn is not None and card is not None
    assert drawn["width"] > 0.7 * card["width"]  # the timeline spans the card, not a corner
    for end in (0.00123, 0.0125, 98_765.4):  # long last tick labels: 0.00125, 0.0125, 100000
        bars = [TimelineBar("load", 0.0, end / 2, "success"), TimelineBar("fit", end / 2, end,
                                                                          "failure")]  # fmt: skip
        page.set_content(f"<!doctype html><body>{timeline(bars)}</body>")
        drawn = page.locator("svg")
        assert drawn.evaluate(_OUTSIDE) == 0, end  # the last label ran past the right edge


def test_a_failed_run_shows_its_error(page: Page, site: tuple[str, Path, Filled]) -> None:
    page.goto(f"/run?id={site[2].failed}")
    failure = page.locator("section.failure").inner_text()
    assert "Failure in stage ui_boom" in failure
    assert "ValueError: went wrong <script>alert('x')</script>" in failure  # shown, never run
    assert texts(page, "h1 .status") == ["failed"]
    shot(page, "run-failed")


def test_compare_shows_a_metric_difference(page: Page) -> None:
    page.goto("/?batch=sweep-1&sort=metric:score&order=asc&metric=score")
    boxes = page.locator("table.runs tbody input[type=checkbox]")
    boxes.nth(0).check()
    boxes.nth(5).check()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url(re.compile(r"/compare\?run="))
    score = page.locator('table.metrics-diff tr[data-metric="score"] td')
    assert [t.strip() for t in score.all_inner_texts()] == ["1.5", "4", "+2.5"]
    changed = texts(page, "table.config-diff tbody th")
    assert changed == ["ui_score.alpha", "ui_score.depth"]
    shot(page, "compare")


def test_the_sweep_page_draws_its_plot_and_marks_the_best_point(page: Page) -> None:
    page.goto("/batch?id=sweep-1&by=score")
    plot = page.locator(".sweep-plot svg")
    assert plot.locator("circle.mark").count() == 6
    assert plot.locator("circle.best").count() == 1
    box = plot.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 200
    assert texts(page, "table.sweep tr.best td.star") == ["★"]
    shot(page, "sweep")
    page.get_by_label("Direction").select_option("min")
    page.wait_for_url(re.compile(r"direction=min"))
    assert "lowest" in page.locator(".best-line").inner_text()
    page.goto("/batch?id=sweep-3&by=score")
    assert page.locator(".sweep-plot svg.chart-parallel path.mark").count() == 8
    shot(page, "sweep-parallel")


def test_a_running_run_updates_without_a_reload(page: Page, site: tuple[str, Path, Filled]) -> None:
    url, db, _ = site
    flag = db.parent / "release-live-run"
    exp = Experiment(
        id="live",
        pipeline=[StageDef(name="ui_score"), StageDef(name="ui_wait", options={"flag": str(flag)})],
    )

    async def go() -> None:
        async with RunStore(db) as store:
            await crucible.run(exp, run_id="live-run", store=store, registry=REGISTRY)

    runner = threading.Thread(target=asyncio.run, args=(go(),), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/run.json", params={"id": "live-run"}).status_code != 200:
            assert time.monotonic() < deadline, "the live run never reached the store"
            time.sleep(0.05)
        page.goto("/run?id=live-run")
        page.wait_for_selector('h1 [data-status="running"]')
        page.wait_for_function(
            "document.querySelectorAll('table.attempts td.stage-name').length === 1"
        )
        running = page.locator('svg.chart-timeline rect.mark[data-result="running"]')
        assert running.count() == 1  # the stage it is in, inferred from the finished attempts
        assert "ui_wait: running for" in (running.locator("title").text_content() or "")
        assert "1 · ui_wait" in page.locator("svg.chart-timeline").all_text_contents()[0]
        page.evaluate("window.__sameDocument = 42")
        shot(page, "run-live-running")
        flag.write_text("go")
        page.wait_for_selector('h1 [data-status="completed"]', timeout=10_000)
        assert page.evaluate("window.__sameDocument") == 42
        assert texts(page, "table.attempts td.stage-name") == ["ui_score", "ui_wait"]
        assert "waited" in texts(page, "table.metrics th")
        assert page.locator("[data-live]").count() == 0  # the page stopped polling
        assert page.locator('svg.chart-timeline rect.mark[data-result="running"]').count() == 0
        shot(page, "run-live-done")
    finally:
        flag.write_text("go")
        runner.join(30)
