"""The example FastAPI service, served by a real uvicorn in a thread and called over real HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import random
import re
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

import crucible.logging
from crucible.store import RunStore
from crucible.testing import SpanCapture, capture_spans
from examples.service import create_app, find_experiment_file
from examples.service_stages import demo_registry
from tests.support.asgi_server import serve

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-live-DO-NOT-ECHO-4242"
DEMO_YAML = """\
id: named-demo
pipeline:
  - name: nap
    options: {seconds: 0.01}
  - name: tally
    options: {factor: 3}
"""


@dataclass
class Service:
    """A running service and what it writes to: spans, logs, the SQLite store file."""

    url: str
    spans: SpanCapture
    logs: io.StringIO
    db: Path
    outside: Path

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs.getvalue().splitlines() if line.strip()]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    logs = io.StringIO()
    crucible.logging.configure(json=True, stream=logs)  # conftest resets structlog afterwards
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "demo.yaml").write_text(DEMO_YAML)
    (experiments / "broken.yaml").write_text(
        "id: broken\npipeline:\n  - name: nap\n    timeout: x\n"
    )
    (experiments / "typo.json").write_text('{"id": "typo", "pipeline": [{"name": "nqp"}]}')
    outside = tmp_path / "x.yaml"  # valid, but outside the experiments folder
    outside.write_text(DEMO_YAML)
    db = tmp_path / "runs.db"
    store = RunStore(db)
    with capture_spans() as cap:
        app = create_app(
            store=store,
            registry=demo_registry(),
            tracer_provider=cap.provider,
            experiments_dir=experiments,
        )
        with serve(app, store) as url:
            yield Service(url=url, spans=cap, logs=logs, db=db, outside=outside)


def client(svc: Service, **kwargs: Any) -> httpx.AsyncClient:
    kwargs.setdefault("timeout", httpx.Timeout(20.0))
    return httpx.AsyncClient(base_url=svc.url, **kwargs)


def experiment(*stages: tuple[str, dict[str, Any]], exp_id: str = "service-demo") -> dict[str, Any]:
    return {"id": exp_id, "pipeline": [{"name": n, "options": o} for n, o in stages]}


def run_spans(spans: list[ReadableSpan], run_id: str) -> ReadableSpan:
    found = [s for s in spans if (s.attributes or {}).get("cicd.pipeline.run.id") == run_id]
    assert len(found) == 1, f"expected one RUN span for {run_id}, got {len(found)}"
    return found[0]


# --- many concurrent requests ----------------------------------------------------------------


async def test_concurrent_runs_keep_their_traces_logs_and_metrics(service: Service) -> None:
    n = 100
    rng = random.Random(7)
    pipeline = experiment(
        ("nap", {"seconds": 0.05}), ("chatter", {"lines": 3}), ("tally", {"factor": 2})
    )
    calls: list[dict[str, Any]] = [
        {
            "trace_id": f"{rng.getrandbits(128) | 1:032x}",
            "span_id": f"{rng.getrandbits(64) | 1:016x}",
            "tag": f"caller-{i}",
            "numbers": [rng.randint(-1000, 1000) for _ in range(rng.randint(1, 8))],
        }
        for i in range(n)
    ]

    async with client(service, limits=httpx.Limits(max_connections=n)) as http:

        async def call(c: dict[str, Any]) -> httpx.Response:
            return await http.post(
                "/runs",
                json={
                    "experiment": pipeline,
                    "assigns": {"tag": c["tag"], "numbers": c["numbers"]},
                },
                headers={"traceparent": f"00-{c['trace_id']}-{c['span_id']}-01"},
            )

        responses = await asyncio.gather(*(call(c) for c in calls))

    bodies = []
    for c, resp in zip(calls, responses, strict=True):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        bodies.append(body)
        assert body["status"] == "completed"
        assert body["trace_id"] == c["trace_id"]
        m = body["metrics"]
        assert m["tag"] == c["tag"] and m["run_id"] == body["run_id"]
        assert m["count"] == len(c["numbers"]) and m["sum"] == 2 * sum(c["numbers"])
    assert len({b["run_id"] for b in bodies}) == n

    # Spans: caller span -> SERVER span -> RUN span -> stage spans, one tree per caller trace.
    by_trace: dict[str, list[ReadableSpan]] = defaultdict(list)
    for span in service.spans.spans():
        by_trace[f"{span.context.trace_id:032x}"].append(span)
    assert set(by_trace) == {c["trace_id"] for c in calls}
    for c, body in zip(calls, bodies, strict=True):
        spans = by_trace[c["trace_id"]]
        servers = [s for s in spans if s.kind == SpanKind.SERVER and not s.name.startswith("RUN ")]
        assert len(servers) == 1
        server = servers[0]
        assert server.parent is not None and server.parent.is_remote
        assert f"{server.parent.span_id:016x}" == c["span_id"]
        runs = [s for s in spans if s.name.startswith("RUN ")]
        assert len(runs) == 1, "exactly one run per request trace: no span of another run here"
        run = runs[0]
        assert run.name == "RUN service-demo" and run.kind == SpanKind.SERVER
        assert (run.attributes or {})["cicd.pipeline.run.id"] == body["run_id"]
        assert run.parent is not None and run.parent.span_id == server.context.span_id
        stages = [s for s in spans if s.name.startswith("stage ")]
        assert [s.name for s in sorted(stages, key=lambda s: s.start_time or 0)] == [
            "stage nap",
            "stage chatter",
            "stage tally",
        ]
        assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in stages)
        urls = {(s.attributes or {}).get("cicd.pipeline.task.run.url.full") for s in stages}
        assert len(urls) == 1 and str(urls.pop()).endswith(f"/runs/{body['run_id']}")
        assert len(spans) == 5  # server, run, three stages

    # Logs: every line carries its own run's ids; the stage's lines say which run they saw.
    trace_of = {b["run_id"]: b["trace_id"] for b in bodies}
    tag_of = {b["run_id"]: c["tag"] for b, c in zip(bodies, calls, strict=True)}
    lines = service.log_lines()
    chatter = [line for line in lines if line.get("event") == "chatter"]
    assert len(chatter) == 3 * n
    assert Counter(line["run_id"] for line in chatter) == dict.fromkeys(trace_of, 3)
    for line in chatter:
        assert line["seen_run_id"] == line["run_id"]
        assert line["trace_id"] == trace_of[line["run_id"]]
        assert line["tag"] == tag_of[line["run_id"]]
        assert line["stage"] == "chatter" and line["experiment_id"] == "service-demo"
    for line in lines:
        if "run_id" in line and "trace_id" in line:
            assert line["trace_id"] == trace_of[line["run_id"]], line


# --- the run store ---------------------------------------------------------------------------


async def test_get_run_returns_the_stored_run(service: Service) -> None:
    async with client(service) as http:
        resp = await http.post(
            "/runs",
            json={
                "experiment": experiment(("nap", {}), ("tally", {"factor": 1.5})),
                "run_id": "stored-1",
                "assigns": {"numbers": [1, 2, 3], "db_password": SECRET},
            },
        )
        assert resp.status_code == 200, resp.text
        posted = resp.json()
        assert posted["run_id"] == "stored-1" and posted["metrics"]["sum"] == 9.0

        got = await http.get("/runs/stored-1")
        assert got.status_code == 200, got.text
        run = got.json()
        assert run["run_id"] == "stored-1" and run["status"] == "completed"
        assert run["trace_id"] == posted["trace_id"]
        assert run["metrics"]["sum"] == 9.0
        assert [a["stage"] for a in run["attempts"]] == ["nap", "tally"]
        assert SECRET not in got.text
        # What the run did, not what it held: no assigns, options, configuration or outputs.
        assert set(run) == {
            "run_id",
            "experiment_id",
            "status",
            "trace_id",
            "batch_id",
            "started_at",
            "finished_at",
            "duration_s",
            "metrics",
            "failure",
            "attempts",
            "artifacts",
        }
        assert set(run["attempts"][0]) == {
            "stage",
            "stage_index",
            "attempt",
            "result",
            "duration_s",
            "error_type",
            "error",
        }
        listed = await http.get("/runs", params={"limit": 5})
        assert listed.status_code == 200, listed.text
        assert [r["run_id"] for r in listed.json()["runs"]] == ["stored-1"]
        assert SECRET not in listed.text and "assigns" not in listed.json()["runs"][0]

        again = await http.post(
            "/runs", json={"experiment": experiment(("nap", {})), "run_id": "stored-1"}
        )
        assert again.status_code == 409, again.text

        missing = await http.get("/runs/no-such-run")
        assert missing.status_code == 404
        assert "no-such-run" in missing.json()["detail"]


async def test_named_experiment_runs_from_the_experiments_folder(service: Service) -> None:
    async with client(service) as http:
        resp = await http.post("/runs", json={"name": "demo", "assigns": {"numbers": [2, 5]}})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["experiment_id"] == "named-demo" and body["metrics"]["sum"] == 21.0


async def test_failed_stage_is_a_successful_call_with_status_failed(service: Service) -> None:
    async with client(service) as http:
        resp = await http.post(
            "/runs",
            json={"experiment": experiment(("nap", {"seconds": 0}), ("boom", {"message": "bad"}))},
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "failed"
        assert body["failure"] == {
            "stage": "boom",
            "result": "failure",
            "error": "RuntimeError: bad",
        }
        assert body["metrics"] == {"napped_s": 0.0}  # the last good context's metrics
        stored = (await http.get(f"/runs/{body['run_id']}")).json()
        assert stored["status"] == "failed"
        assert stored["failure"] == {
            "stage": "boom",
            "error_type": "RuntimeError",
            "error": "bad",
        }, stored

        slow = await http.post(
            "/runs", json={"experiment": experiment(("nap", {"seconds": 5})), "timeout": 0.1}
        )
        assert slow.status_code == 200, slow.text
        assert slow.json()["status"] == "timed_out"
        assert slow.json()["failure"]["result"] == "timeout"


# --- client disconnect -----------------------------------------------------------------------


async def test_client_disconnect_cancels_the_run(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    body = {"experiment": experiment(("nap", {"seconds": 30})), "run_id": "walked-away"}
    started = time.monotonic()
    async with client(service, timeout=httpx.Timeout(0.3)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post("/runs", json=body)

    status = None
    async with client(service) as http:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            resp = await http.get("/runs/walked-away")
            status = resp.json().get("status") if resp.status_code == 200 else None
            if status == "cancelled":
                break
            await asyncio.sleep(0.05)
    assert status == "cancelled"
    assert time.monotonic() - started < 5  # cancelled, not slept out

    # The same row, read through a second store on the test's own loop.
    async with RunStore(service.db) as store:
        info = await store.get_run("walked-away")
    assert info is not None and info.status == "cancelled" and info.finished_at is not None
    assert [a.result for a in info.attempts] == ["cancellation"]

    spans = service.spans.spans()
    run = run_spans(spans, "walked-away")
    assert (run.attributes or {})["cicd.pipeline.result"] == "cancellation"
    stage = next(s for s in spans if s.name == "stage nap")
    assert (stage.attributes or {})["cicd.pipeline.task.run.result"] == "cancellation"
    server = next(s for s in spans if s.kind == SpanKind.SERVER and s is not run)
    assert run.parent is not None and run.parent.span_id == server.context.span_id
    attrs = server.attributes or {}
    assert attrs.get("http.response.status_code", attrs.get("http.status_code")) == 499

    # Cancellation is an outcome, not an error: nothing logged at error level.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert not [line for line in service.log_lines() if line.get("level") in ("error", "critical")]


# --- bad input -------------------------------------------------------------------------------


async def test_bad_input_is_rejected_before_anything_runs(service: Service) -> None:
    async with client(service) as http:
        malformed = await http.post(
            "/runs", content=b'{"experiment": ', headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 422
        assert malformed.json()["problems"][0]["field"] == "body"

        bad_field = await http.post(
            "/runs",
            json={
                "experiment": experiment(("nap", {"api_key": SECRET})),
                "timeout": "soon",
            },
        )
        assert bad_field.status_code == 422
        assert [p["field"] for p in bad_field.json()["problems"]] == ["timeout"]
        assert SECRET not in bad_field.text

        nested = await http.post(
            "/runs",
            json={"experiment": {"id": "x", "pipeline": [{"name": "nap", "timeout": -1}]}},
        )
        assert nested.status_code == 422
        assert [p["field"] for p in nested.json()["problems"]] == ["experiment.pipeline[0].timeout"]

        both = await http.post(
            "/runs", json={"experiment": experiment(("nap", {"token": SECRET})), "name": "demo"}
        )
        assert both.status_code == 422 and SECRET not in both.text
        neither = await http.post("/runs", json={"assigns": {}})
        assert neither.status_code == 422

        unknown_stage = await http.post(
            "/runs",
            json={
                "experiment": experiment(("nap", {}), ("nope", {})),
                "run_id": "never-ran",
            },
        )
        assert unknown_stage.status_code == 422
        problems = unknown_stage.json()["problems"]
        assert len(problems) == 1
        assert problems[0]["stage"] == "nope" and problems[0]["field"] == "experiment.pipeline[1]"
        assert "unknown stage 'nope'" in problems[0]["message"]
        assert (await http.get("/runs/never-ran")).status_code == 404  # nothing was stored

        bad_option = await http.post(
            "/runs",
            json={"experiment": experiment(("nap", {"seconds": "long", "api_key": SECRET}))},
        )
        assert bad_option.status_code == 422
        fields = sorted(p["field"] for p in bad_option.json()["problems"])
        assert fields == [
            "experiment.pipeline[0].options.api_key",
            "experiment.pipeline[0].options.seconds",
        ]
        assert SECRET not in bad_option.text

        assert (await http.post("/runs", json={"name": "missing"})).status_code == 404
        broken = await http.post("/runs", json={"name": "broken"})
        assert broken.status_code == 422
        assert broken.json()["problems"][0]["source"] == "broken.yaml"
        assert "pipeline[0].timeout" in broken.json()["problems"][0]["message"]

        typo = await http.post("/runs", json={"name": "typo"})
        assert typo.status_code == 422
        assert typo.json()["problems"][0]["source"] == "typo.json"
        assert typo.json()["problems"][0]["field"] == "pipeline[0]"

        for name in ("../x", "..", "/etc/passwd", "a/b", "x.yaml", "", "demo\x00"):
            resp = await http.post("/runs", json={"name": name, "run_id": "traversal"})
            assert resp.status_code == 422, (name, resp.text)
            assert resp.json()["problems"][0]["field"] == "name"
        assert (await http.get("/runs/traversal")).status_code == 404

    with pytest.raises(ValueError):
        find_experiment_file(service.outside.parent / "experiments", "../x")


async def test_without_tracing_runs_still_get_spans_but_no_server_span() -> None:
    with capture_spans() as cap:
        app = create_app(registry=demo_registry(), tracer_provider=cap.provider, tracing=False)
        with serve(app) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                resp = await http.post("/runs", json={"experiment": experiment(("nap", {}))})
        assert resp.status_code == 200, resp.text
        assert resp.json()["trace_id"] == f"{cap.one('RUN service-demo').context.trace_id:032x}"
        servers = [s for s in cap.spans() if s.kind == SpanKind.SERVER]
        assert [s.name for s in servers] == ["RUN service-demo"]  # the run's own, no request span


async def test_without_a_store_get_answers_503() -> None:
    with capture_spans() as cap:
        app = create_app(registry=demo_registry(), tracer_provider=cap.provider)
        with serve(app) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                posted = await http.post("/runs", json={"experiment": experiment(("nap", {}))})
                assert posted.status_code == 200, posted.text
                assert (await http.get(f"/runs/{posted.json()['run_id']}")).status_code == 503
                assert (await http.post("/runs", json={"name": "demo"})).status_code == 404


# --- the deployed app: `uvicorn examples.service:app` ------------------------------------------


async def test_module_app_configures_telemetry_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "hello.yaml").write_text("id: hello\npipeline:\n  - name: chatter\n")
    traces = tmp_path / "traces.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
    env.pop("TRACEPARENT", None)
    env |= {
        "OTEL_TRACES_EXPORTER": "file",
        "OTEL_SERVICE_NAME": "service-under-test",
        "CRUCIBLE_TRACES_FILE": str(traces),
        "CRUCIBLE_STORE_URL": str(tmp_path / "runs.db"),
        "CRUCIBLE_EXPERIMENTS_DIR": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "examples.service:app",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output: list[str] = []
    trace_id, parent = f"{random.getrandbits(128) | 1:032x}", f"{random.getrandbits(64) | 1:016x}"
    try:
        port = None
        async with asyncio.timeout(15):
            while port is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "uvicorn exited: " + "".join(output)
                output.append(line)
                found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
                port = int(found.group(1)) if found else None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            resp = await http.post(
                "/runs",
                json={"name": "hello"},
                headers={"traceparent": f"00-{trace_id}-{parent}-01"},
            )
            assert resp.status_code == 200, resp.text
            run_id = resp.json()["run_id"]
            stored = await http.get(f"/runs/{run_id}")
            assert stored.status_code == 200 and stored.json()["trace_id"] == trace_id
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        try:
            rest, _ = await asyncio.wait_for(proc.communicate(), timeout=15)
        except TimeoutError:
            proc.kill()
            rest, _ = await proc.communicate()
        output.append(rest.decode())
    assert proc.returncode == 0, "".join(output)

    spans: dict[str, dict[str, Any]] = {}
    for line in traces.read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            resource = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
            assert resource["service.name"] == {"stringValue": "service-under-test"}
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    spans[span["name"]] = span
    assert {"POST /runs", "RUN hello", "stage chatter"} <= set(spans)
    assert spans["POST /runs"]["traceId"] == trace_id
    assert spans["POST /runs"]["parentSpanId"] == parent
    assert spans["RUN hello"]["traceId"] == trace_id
    assert spans["RUN hello"]["parentSpanId"] == spans["POST /runs"]["spanId"]
    assert spans["stage chatter"]["parentSpanId"] == spans["RUN hello"]["spanId"]
    logged = [json.loads(x) for x in "".join(output).splitlines() if x.startswith("{")]
    chatter = [x for x in logged if x.get("event") == "chatter"]
    assert chatter and all(x["trace_id"] == trace_id and x["run_id"] == run_id for x in chatter)
