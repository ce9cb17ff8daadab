"""What the example service accepts before it runs anything: one run per id, JSON only, known
Host names, and options checked in pre-flight. Real uvicorn servers on 127.0.0.1, real HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from crucible import Registry
from crucible.store import RunInfo, RunStore
from examples.service import create_app
from examples.service_settings import ServiceSettings
from examples.service_stages import STAGES as DEMO_STAGES
from tests.support.asgi_server import serve


@dataclass
class Served:
    url: str
    db: Path
    reports: Path

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", httpx.Timeout(30.0))
        return httpx.AsyncClient(base_url=self.url, **kwargs)


def settings_for(tmp_path: Path, **values: Any) -> ServiceSettings:
    data, reports = tmp_path / "data", tmp_path / "reports"
    data.mkdir(exist_ok=True)
    reports.mkdir(exist_ok=True)
    (data / "rows.jsonl").write_text('{"input": "q", "output": "a"}\n')
    return ServiceSettings.defaults(data_dir=data, reports_dir=reports, **values)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    store = RunStore(tmp_path / "runs.db")
    source = Registry(DEMO_STAGES, discover=True)
    app = create_app(store=store, registry=source, settings=settings_for(tmp_path), tracing=False)
    with serve(app, store) as url:
        yield Served(url, tmp_path / "runs.db", tmp_path / "reports")


def run_body(*stages: tuple[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    pipeline = [{"name": n, "options": o} for n, o in stages]
    return {"experiment": {"id": "req", "pipeline": pipeline, **extra.pop("exp", {})}, **extra}


# --- one run per id --------------------------------------------------------------------------


async def test_concurrent_posts_of_one_run_id_answer_one_200_and_the_rest_409(
    served: Served,
) -> None:
    rounds, per_round = 15, 30
    async with served.client(limits=httpx.Limits(max_connections=per_round)) as http:
        for r in range(rounds):
            run_id = f"same-{r}"
            answers = await asyncio.gather(
                *(http.post("/runs", json=run_body(("nap", {"seconds": 0}), run_id=run_id))
                  for _ in range(per_round))
            )  # fmt: skip
            codes = Counter(a.status_code for a in answers)
            assert codes[200] == 1 and codes[200] + codes[409] == per_round, (run_id, codes)
            for a in answers:
                if a.status_code == 409:
                    assert a.json()["run_id"] == run_id
                    assert a.json()["detail"] in (
                        f"run {run_id!r} already exists",
                        f"run {run_id!r} is running",
                    )
    async with RunStore(served.db) as store:
        runs = await store.list_runs(limit=100)
    assert sorted(i.run_id for i in runs) == sorted(f"same-{r}" for r in range(rounds))


class SlowReads(RunStore):
    """A real SQLite store whose reads take a while: another service sharing the file can store
    the same run id between this one's check and its run."""

    async def get_run(self, run_id: str) -> RunInfo | None:
        await asyncio.sleep(0.5)
        return await super().get_run(run_id)


async def test_a_run_id_stored_meanwhile_by_another_service_is_a_409(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    stores = [SlowReads(db), SlowReads(db)]
    apps = [
        create_app(store=s, registry=Registry(DEMO_STAGES), settings=settings_for(tmp_path),
                   tracing=False)
        for s in stores
    ]  # fmt: skip
    with serve(apps[0], stores[0]) as one, serve(apps[1], stores[1]) as two:
        async with httpx.AsyncClient(timeout=30) as http:
            body = run_body(("nap", {"seconds": 1}), run_id="shared")
            answers = await asyncio.gather(
                http.post(f"{one}/runs", json=body), http.post(f"{two}/runs", json=body)
            )
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json() == {"detail": "run 'shared' already exists", "run_id": "shared"}
