"""Artifacts: only regular files inside an allowed root are served, in a sandbox."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from crucible import Experiment, StageDef, run
from crucible.store import RunStore
from crucible.ui.artifacts import ARTIFACT_CSP, servable
from crucible.ui.config import UiSettings
from tests.ui.conftest import served
from tests.ui.fill import Filled
from tests.ui.stages import REGISTRY


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """``root`` with a report, a folder and symlinks; ``outside`` with a secret file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "reports").mkdir(parents=True)
    outside.mkdir()
    (root / "reports" / "r.html").write_text("<h1>ok</h1>")
    (outside / "secret.txt").write_text("do not serve")
    os.symlink(outside / "secret.txt", root / "reports" / "escape.txt")
    os.symlink(root / "reports" / "r.html", root / "inside-link.html")
    return root.resolve(), outside.resolve()


def test_files_inside_the_root_are_served(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    report = root / "reports" / "r.html"
    assert servable(str(report), [root]) == report
    assert servable("reports/r.html", [root]) == report  # relative to the first root
    assert servable("reports/../reports/r.html", [root]) == report
    assert servable(report.as_uri(), [root]) == report
    assert servable("inside-link.html", [root]) == report  # a symlink that stays inside


@pytest.mark.parametrize(
    "location",
    [
        "../outside/secret.txt",  # climbs out
        "reports/escape.txt",  # a symlink pointing out
        "reports",  # a directory
        "reports/missing.html",
        "https://example.org/r.html",
        "file://otherhost/etc/passwd",
        "reports/r.html\x00.txt",
        "",
    ],
)
def test_anything_else_is_not(tree: tuple[Path, Path], location: str) -> None:
    root, _ = tree
    assert servable(location, [root]) is None


def test_absolute_paths_outside_every_root_are_not_served(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    assert servable(str(outside / "secret.txt"), [root]) is None
    assert servable("/etc/passwd", [root]) is None
    assert servable(str(outside / "secret.txt"), [root, outside]) == outside / "secret.txt"


async def test_a_report_opens_in_the_browser_in_a_sandbox(
    client: httpx.AsyncClient, filled: tuple[Path, Filled]
) -> None:
    _, ids = filled
    page = await client.get("/run", params={"id": ids.reported})
    link = re.search(r'href="(/artifact\?run=[^"]+)"', page.text)
    assert link is not None
    report = await client.get(link.group(1).replace("&amp;", "&"))
    assert report.status_code == 200
    assert report.text == f"<h1>Report of {ids.reported}</h1>"
    assert report.headers["content-type"].startswith("text/html")
    assert report.headers["content-security-policy"] == ARTIFACT_CSP
    assert report.headers["content-disposition"].startswith("inline")


async def test_artifacts_outside_the_roots_are_shown_as_text_only(tmp_path: Path) -> None:
    db, secret = tmp_path / "runs.db", tmp_path / "elsewhere" / "secret.html"
    exp = Experiment(id="e", pipeline=[StageDef(name="ui_report", options={"path": str(secret)})])
    async with RunStore(db) as store:
        ctx = await run(exp, store=store, registry=REGISTRY)
        info = await store.get_run(ctx.run_id)
    assert info is not None and secret.is_file()
    (art,) = info.artifacts
    root = tmp_path / "served"
    root.mkdir()
    settings = UiSettings(store_url=str(db), artifact_roots=(root,))
    with served(settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/run", params={"id": ctx.run_id})
            direct = await http.get("/artifact", params={"run": ctx.run_id, "id": art.id})
            unknown = await http.get("/artifact", params={"run": ctx.run_id, "id": 999})
    assert "/artifact?" not in page.text
    assert f'<code class="path">{secret}</code>' in page.text
    assert direct.status_code == 404 and "Report of" not in direct.text
    assert unknown.status_code == 404
