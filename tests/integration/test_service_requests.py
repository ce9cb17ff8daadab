"""What the example service accepts before it runs anything: one run per id, JSON only, known
Host names, and options checked in pre-flight. Real uvicorn servers on 127.0.0.1, real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from crucible import Registry
from crucible.store import RunInfo, RunStore
from crucible.testing import capture_spans
from examples.service import create_app
from examples.service_settings import ServiceSettings
from examples.service_stages import STAGES as DEMO_STAGES
from examples.service_views import PathMask
from tests.support.asgi_server import serve

URL_FULL = "cicd.pipeline.task.run.url.full"


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
                *(
                    http.post("/runs", json=run_body(("nap", {"seconds": 0}), run_id=run_id))
                    for _ in range(per_round)
                )
            )
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
        create_app(
            store=s, registry=Registry(DEMO_STAGES), settings=settings_for(tmp_path), tracing=False
        )
        for s in stores
    ]
    with serve(apps[0], stores[0]) as one, serve(apps[1], stores[1]) as two:
        async with httpx.AsyncClient(timeout=30) as http:
            body = run_body(("nap", {"seconds": 1}), run_id="shared")
            answers = await asyncio.gather(
                http.post(f"{one}/runs", json=body), http.post(f"{two}/runs", json=body)
            )
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json() == {"detail": "run 'shared' already exists", "run_id": "shared"}


# --- pre-flight: refused before anything runs ------------------------------------------------


def only_problem(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 422, resp.text
    problems = resp.json()["problems"]
    assert len(problems) == 1, problems
    return dict(problems[0])


async def test_report_paths_outside_the_reports_folder_are_a_422_naming_the_field(
    served: Served, tmp_path: Path
) -> None:
    async with served.client() as http:
        for j, path in enumerate(("../../a.json", "../../../tmp/attack/x.json", "/etc/x.json")):
            outputs = [
                {"name": "fine", "formats": ["json"]},
                {"name": "s", "formats": ["json"], "options": {"path": path}},
            ]
            resp = await http.post(
                "/runs",
                json=run_body(
                    ("load_examples", {"path": "rows.jsonl"}),
                    ("report", {}),
                    run_id=f"out-{j}",
                    exp={"outputs": outputs},
                ),
            )
            problem = only_problem(resp)
            assert problem["field"] == "experiment.outputs[1].options.path"
            assert problem["stage"] == "report" and problem["stage_index"] == 1
            assert problem["message"] == (
                f"output 's': path {path!r} is outside the reports folder (out_dir); "
                "give a path inside it"
            )  # as the client gave it, never resolved to where the service keeps files
            assert str(tmp_path) not in resp.text and "<reports>" not in resp.text
            assert (await http.get(f"/runs/out-{j}")).status_code == 404  # nothing ran
        bad_format = [{"name": "pdfy", "formats": ["pdf"]}]
        resp = await http.post("/runs", json=run_body(("report", {}), exp={"outputs": bad_format}))
        assert only_problem(resp)["field"] == "experiment.outputs[0].formats"
        ok = await http.post(
            "/runs",
            json=run_body(
                ("report", {}),
                run_id="out-ok",
                exp={
                    "outputs": [{"name": "s", "formats": ["json"], "options": {"path": "s.json"}}]
                },
            ),
        )
        assert ok.status_code == 200 and ok.json()["status"] == "completed", ok.text
    assert sorted(p.name for p in served.reports.rglob("*") if p.is_file()) == ["s.json"]
    assert not (tmp_path.parent / "a.json").exists()


@pytest.mark.parametrize(
    ("stage", "options", "option"),
    [
        ("guardrails", {"adapter": "os:system"}, "adapter"),
        ("data_checks", {"checker": "os:getcwd"}, "checker"),
        ("bench", {"data_source": {"custom": "os:getcwd"}}, "data_source"),
        ("bench", {"data_source": "os.getcwd"}, "data_source"),
    ],
)
async def test_import_path_options_are_a_422_before_the_first_stage_runs(
    served: Served, stage: str, options: dict[str, Any], option: str
) -> None:
    async with served.client() as http:
        resp = await http.post(
            "/runs",
            json=run_body(
                ("load_examples", {"path": "rows.jsonl"}), (stage, options), run_id="imports"
            ),
        )
        problem = only_problem(resp)
        assert problem["field"] == f"experiment.pipeline[1].options.{option}"
        assert problem["stage"] == stage
        assert "is an import path; this service never imports code" in problem["message"]
        assert (await http.get("/runs/imports")).status_code == 404  # load_examples never ran


async def test_the_stages_own_words_for_those_options_still_run(served: Served) -> None:
    async with served.client() as http:
        resp = await http.post(
            "/runs",
            json=run_body(
                ("tally", {}),
                ("bench", {"data_source": "metrics"}),
                ("guardrails", {}),
                assigns={"numbers": [1, 2]},
            ),
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] in ("completed", "failed"), resp.text
    assert "import path" not in resp.text


async def test_a_named_experiments_problems_name_its_file(tmp_path: Path) -> None:
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "pwn.yaml").write_text(
        "id: pwn\npipeline:\n  - name: guardrails\n    options: {adapter: 'os:system'}\n"
    )
    app = create_app(
        registry=Registry(DEMO_STAGES, discover=True),
        experiments_dir=experiments,
        settings=settings_for(tmp_path),
        tracing=False,
    )
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            problem = only_problem(await http.post("/runs", json={"name": "pwn"}))
    assert problem["field"] == "pipeline[0].options.adapter" and problem["source"] == "pwn.yaml"


def test_the_path_mask_replaces_whole_paths_never_inside_a_clients_text(tmp_path: Path) -> None:
    folder = tmp_path / "attack" / "experiments"
    folder.mkdir(parents=True)
    mask = PathMask({"experiments": folder})
    given = f"../../..{folder}/pwn.yaml"  # the client's own relative path
    text = f"{given!r} resolves to {folder}/pwn.yaml; also x{folder}, ~{folder}, '{folder}'"
    assert mask.text(text) == (
        f"{given!r} resolves to <experiments>/pwn.yaml; also x{folder}, ~{folder}, '<experiments>'"
    )


# --- JSON bodies only, and only for this service's Host names ---------------------------------


async def test_only_json_bodies_run(served: Served) -> None:
    async with served.client() as http:
        raw = json.dumps(run_body(("nap", {}), run_id="typed")).encode()
        for ctype in (
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json",
            "application/jsonp",
        ):
            headers = {} if ctype is None else {"content-type": ctype}
            resp = await http.post("/runs", content=raw, headers=headers)
            assert resp.status_code == 415, (ctype, resp.text)
            assert resp.json() == {
                "detail": "POST /runs takes JSON: send 'Content-Type: application/json'"
            }
        assert (await http.get("/runs/typed")).status_code == 404  # nothing ran
        for i, ctype in enumerate(("application/json", "Application/JSON; charset=utf-8")):
            raw = json.dumps(run_body(("nap", {}), run_id=f"typed-{i}")).encode()
            resp = await http.post("/runs", content=raw, headers={"content-type": ctype})
            assert resp.status_code == 200, (ctype, resp.text)


async def test_requests_must_name_this_service_as_their_host(served: Served) -> None:
    port = httpx.URL(served.url).port
    assert port is not None
    other = port + 1 if port < 65535 else port - 1
    refused = [
        "attacker.example",
        f"attacker.example:{port}",  # a DNS-rebound page names its own domain
        f"127.0.0.1.attacker.example:{port}",
        f"127.0.0.1:{other}",
        "127.0.0.1",
        f"localhost:{port}x",
        f"[::1]x:{port}",
    ]
    async with served.client() as http:
        for i, host in enumerate(refused):
            for method, path in [
                ("POST", "/runs"),
                ("GET", "/runs"),
                ("GET", "/runs/x"),
                ("GET", "/docs"),
            ]:
                body = run_body(("nap", {}), run_id=f"rebound-{i}")
                resp = await http.request(method, path, json=body, headers={"host": host})
                assert resp.status_code == 421, (host, path, resp.text)
                assert "CRUCIBLE_SERVICE_ALLOWED_HOSTS" in resp.json()["detail"]
            health = await http.get("/health", headers={"host": host})
            assert health.status_code == 200  # liveness probes use whatever address they like
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            f"LocalHost.:{port}",
            f"[::1]:{port}",
        ):
            resp = await http.get("/runs", headers={"host": host})
            assert resp.status_code == 200, (host, resp.text)
            assert resp.json()["runs"] == []  # none of the refused posts ran

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /runs HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave the Host out
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=20)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ") and b"no Host header" in answer, answer


async def test_configured_host_names_and_public_url(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        allowed_hosts="crucible.example.com, alias.example:8443",
        public_url="https://crucible.example.com/api/",
    )
    with capture_spans() as cap:
        app = create_app(
            registry=Registry(DEMO_STAGES),
            settings=settings,
            tracing=False,
            tracer_provider=cap.provider,
        )
        with serve(app) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                codes = {}
                for host in (
                    "crucible.example.com",
                    "Crucible.Example.Com:1234",
                    "alias.example:8443",
                    "alias.example:8444",
                    "alias.example",
                    httpx.URL(url).netloc.decode(),
                ):
                    resp = await http.get("/docs", headers={"host": host})
                    codes[host] = resp.status_code
                posted = await http.post(
                    "/runs",
                    json=run_body(("nap", {}), run_id="linked"),
                    headers={"host": "crucible.example.com"},
                )
        spans = cap.spans()
    assert list(codes.values()) == [200, 200, 200, 421, 421, 421], codes
    assert posted.status_code == 200, posted.text
    links = {(s.attributes or {}).get(URL_FULL) for s in spans if s.name == "stage nap"}
    assert links == {"https://crucible.example.com/api/runs/linked"}


async def test_the_run_link_is_the_bound_address_not_the_clients_host(tmp_path: Path) -> None:
    with capture_spans() as cap:
        app = create_app(
            registry=Registry(DEMO_STAGES),
            settings=settings_for(tmp_path),
            tracing=False,
            tracer_provider=cap.provider,
        )
        with serve(app) as url:
            port = httpx.URL(url).port
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                posted = await http.post(
                    "/runs",
                    json=run_body(("nap", {}), run_id="bound"),
                    headers={"host": f"localhost:{port}"},
                )
        spans = cap.spans()
    assert posted.status_code == 200, posted.text
    links = {(s.attributes or {}).get(URL_FULL) for s in spans if s.name == "stage nap"}
    assert links == {f"http://127.0.0.1:{port}/runs/bound"}


def test_settings_refuse_malformed_host_names_and_urls() -> None:
    with pytest.raises(ValueError, match="is not a host name"):
        ServiceSettings.defaults(allowed_hosts=("https://x.example/",))
    for bad in ("ftp://x.example", "x.example", "https://x.example/?q=1"):
        with pytest.raises(ValueError, match=r"must be http\(s\)://host"):
            ServiceSettings.defaults(public_url=bad)
