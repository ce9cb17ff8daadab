"""The run page leads with the headlines the bench and data_checks stages stored."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from markupsafe import escape

import crucible
from crucible import Experiment, StageDef
from crucible.files import FileAccess
from crucible.store import RunStore
from crucible.ui.config import UiSettings
from tests.ui.conftest import served

SCORES = {"baseline": [0.61, 0.64, 0.58, 0.66, 0.60], "candidate": [0.71, 0.69, 0.74, 0.68, 0.73]}


async def test_run_page_shows_the_stored_headlines_first(tmp_path: Path) -> None:
    rows = [
        {"id": f"{p}-{i}", "input": "q", "output": "" if i == 2 else "a", "prompt": p, "score": v}
        for p, values in SCORES.items()
        for i, v in enumerate(values)
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    exp = Experiment(
        id="headline",
        pipeline=[
            StageDef(name="load_examples", options={"path": str(data), "as_outputs": True}),
            StageDef(name="data_checks"),
            StageDef(name="bench", options={"tests": ["welch"]}),
        ],
    )
    db = tmp_path / "runs.db"
    async with RunStore(db) as store:
        ctx = await crucible.run(
            exp, run_id="h-run", store=store, file_access=FileAccess.default(cwd=tmp_path)
        )
    bench_line = ctx.metrics["bench"]["headline"]
    checks_line = ctx.metrics["data_checks"]["headline"]
    assert bench_line.startswith("candidate \u2212 baseline = 0.09")
    assert checks_line.startswith("2 of 10 examples flagged: #2 (id baseline-2) missing output")

    with served(UiSettings(store_url=str(db))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            page = (await http.get("/run", params={"id": "h-run"})).text
    section = page.split('<section class="headlines">', 1)[1].split("</section>", 1)[0]
    assert f'<b>bench</b>: <span class="headline">{escape(bench_line)}</span>' in section
    assert escape(checks_line) in section
    assert page.index("Results") < page.index("<h2>Stages</h2>") < page.index("<h2>Metrics</h2>")
