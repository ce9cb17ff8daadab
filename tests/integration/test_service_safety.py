"""The example service is safe to expose: its own folders, a token, body limits, an allow-list.

Every test talks real HTTP to a real uvicorn on 127.0.0.1 (in a thread, or as a subprocess for
the shutdown tests).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import crucible.logging
from crucible import Registry, stage
from crucible.store import RunStore
from examples.service import create_app
from examples.service_settings import DEFAULT_STAGES, ServiceSettings
from examples.service_stages import STAGES as DEMO_STAGES
from examples.service_views import PathMask
from tests.support.asgi_server import serve, uvicorn_process

TOKEN = "tok-3f9c-VERY-PRIVATE-81d2"
SECRET = "sk-live-NEVER-SHOWN-5150"
ROW_MARKER = "row-content-that-stays-on-the-server"
MiB = 1024 * 1024
JSON = {"content-type": "application/json"}


@stage("not_offered", description="installed, but not on the allow-list", register=False)
async def not_offered(ctx: Any) -> Any:
    return ctx.put_metric("should_not_run", True)


@dataclass
class Safe:
    url: str
    data: Path
    reports: Path
    outside: Path
    logs: io.StringIO
    db: Path

    def client(self, token: str | None = TOKEN, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        kwargs.setdefault("timeout", httpx.Timeout(30.0))
        return httpx.AsyncClient(base_url=self.url, headers=headers, **kwargs)


@pytest.fixture
def safe(tmp_path: Path) -> Iterator[Safe]:
    logs = io.StringIO()
    crucible.logging.configure(json=True, stream=logs)  # conftest resets structlog afterwards
    data, reports, outside = tmp_path / "data", tmp_path / "reports", tmp_path / "outside"
    for folder in (data, reports, outside):
        folder.mkdir()
    rows = [{"input": f"q{i}", "output": f"{ROW_MARKER}-{i}"} for i in range(3)]
    (data / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (outside / "private.csv").write_text("input,output\nsecret,stuff\n")
    (data / "link.csv").symlink_to(outside / "private.csv")
    settings = ServiceSettings.defaults(data_dir=data, reports_dir=reports, token=TOKEN)
    db = tmp_path / "runs.db"
    store = RunStore(db)
    source = Registry([*DEMO_STAGES, not_offered], discover=True)
    app = create_app(store=store, registry=source, settings=settings, tracing=False)
    with serve(app, store) as url:
        yield Safe(url, data, reports, outside, logs, db)


def only_files(folder: Path) -> list[str]:
    """The files under ``folder``, relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def exists(path: Path) -> bool:
    return path.exists()


def run_body(*stages: tuple[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    pipeline = [{"name": n, "options": o} for n, o in stages]
    return {"experiment": {"id": "safety", "pipeline": pipeline, **extra.pop("exp", {})}, **extra}


def one_problem(resp: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    problems = resp.json()["problems"]
    assert len(problems) == 1, problems
    return dict(problems[0])


# --- the bearer token ------------------------------------------------------------------------


async def test_every_endpoint_but_health_needs_the_token(safe: Safe) -> None:
    seen: list[httpx.Response] = []
    async with safe.client(token=None) as anon:
        for method, path in [
            ("POST", "/runs"),
            ("GET", "/runs"),
            ("GET", "/runs/anything"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
        ]:
            resp = await anon.request(method, path, json=run_body(("nap", {})))
            seen.append(resp)
            assert resp.status_code == 401, (path, resp.text)
            assert resp.headers["www-authenticate"] == 'Bearer realm="crucible"'
        health = await anon.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN):
            resp = await anon.get("/runs", headers={"Authorization": header})
            seen.append(resp)
            assert resp.status_code == 401, header
        wrong = seen[-4]
        assert wrong.headers["www-authenticate"] == 'Bearer realm="crucible", error="invalid_token"'
    async with safe.client() as http:
        ok = await http.post("/runs", json=run_body(("nap", {}), run_id="with-token"))
        assert ok.status_code == 200, ok.text
        assert (await http.get("/runs/with-token")).json()["status"] == "completed"
        lower = await http.get("/runs", headers={"Authorization": f"bearer {TOKEN}"})
        assert lower.status_code == 200  # the scheme is case-insensitive (RFC 7235)
        seen += [ok, lower]
    for resp in seen:
        assert TOKEN not in resp.text and TOKEN not in str(resp.headers)
    assert TOKEN not in safe.logs.getvalue()


async def test_the_token_is_checked_before_the_body_is_read(safe: Safe) -> None:
    netloc = httpx.URL(safe.url).netloc
    reader, writer = await asyncio.open_connection(*netloc.decode().split(":"))
    writer.write(
        b"POST /runs HTTP/1.1\r\nHost: " + netloc + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: 52428800\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
    assert head.startswith(b"HTTP/1.1 401 ")
    writer.close()


# --- the file roots --------------------------------------------------------------------------


async def test_runs_read_only_the_data_folder_and_write_only_the_reports_folder(
    safe: Safe,
) -> None:
    reports = str(safe.reports.resolve())
    async with safe.client() as http:
        for path in ("/etc/passwd", "../outside/private.csv", "link.csv"):
            resp = await http.post(
                "/runs", json=run_body(("load_examples", {"path": path, "format": "csv"}))
            )
            problem = one_problem(resp)
            assert problem["field"] == "experiment.pipeline[0].options.path", path
            assert "outside the folders this run may read" in problem["message"]
            assert "CRUCIBLE_SERVICE_DATA_DIR" in problem["message"]
            assert repr(path) in problem["message"]  # as the client gave it
            assert str(safe.data.parent) not in resp.text  # never where the server keeps files
            assert "secret,stuff" not in resp.text and "root:" not in resp.text

        pwned = Path("/PWNED.md")
        for out_dir in ("/", str(safe.outside), "../outside"):
            resp = await http.post(
                "/runs",
                json=run_body(
                    ("report", {"out_dir": out_dir}),
                    run_id=f"write-{len(out_dir)}",
                    exp={"outputs": [{"name": "PWNED", "formats": ["markdown"]}]},
                ),
            )
            problem = one_problem(resp)
            assert problem["field"] == "experiment.pipeline[0].options.out_dir", out_dir
            assert reports not in problem["message"], problem
            assert "CRUCIBLE_SERVICE_REPORTS_DIR" in problem["message"]
            assert (await http.get(f"/runs/write-{len(out_dir)}")).status_code == 404
        assert not exists(pwned) and only_files(safe.outside) == ["private.csv"]

        good = await http.post(
            "/runs",
            json=run_body(
                ("load_examples", {"path": "rows.jsonl"}),
                ("report", {"out_dir": "."}),
                run_id="inside",
                exp={"outputs": [{"name": "summary", "formats": ["markdown", "json"]}]},
            ),
        )
        assert good.status_code == 200, good.text
        stored = await http.get("/runs/inside")
    assert stored.status_code == 200
    run = stored.json()
    assert run["status"] == "completed"
    assert sorted(run["artifacts"]) == ["report.summary.json", "report.summary.markdown"]
    assert str(safe.reports) not in stored.text  # names only, not where they are
    assert only_files(safe.reports) == ["safety-inside-summary.json", "safety-inside-summary.md"]
    assert ROW_MARKER not in stored.text and ROW_MARKER not in good.text  # no rows echoed back


def test_the_path_mask_names_whole_folders_only(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    mask = PathMask({"data": tmp_path / "link", "reports": real / "reports", "none": None})
    text = f"{real}/a.csv {tmp_path}/link/b.csv {real}x/c {real}/reports/d.md ({real})"
    assert mask.text(text) == f"<data>/a.csv <data>/b.csv {real}x/c <reports>/d.md (<data>)"
    assert mask.value({"k": [f"{real}/e", 1]}) == {"k": ["<data>/e", 1]}


async def test_answers_name_the_services_folders_never_their_place(safe: Safe) -> None:
    (safe.data / "broken.jsonl").write_text('{"input": "q0"}\n{not json\n')
    async with safe.client() as http:
        missing = one_problem(await http.post(
            "/runs", json=run_body(("load_examples", {"path": "nope.jsonl"}))))  # fmt: skip
        assert missing["message"] == "'nope.jsonl' does not exist"
        failed = await http.post(
            "/runs", json=run_body(("load_examples", {"path": "broken.jsonl"}), run_id="broken")
        )
        assert failed.status_code == 200 and failed.json()["status"] == "failed"
        stored = await http.get("/runs/broken")
        listed = await http.get("/runs")
    error = failed.json()["failure"]["error"]
    assert "<data>/broken.jsonl: line 2: invalid JSON" in error, error
    assert stored.json()["failure"]["error"] in error
    assert stored.json()["attempts"][0]["error"] in error
    for answer in (failed, stored, listed):
        assert str(safe.data) not in answer.text and str(safe.data.parent) not in answer.text


# --- body size and loader limits -------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid run request of exactly ``size`` bytes."""
    skeleton = json.dumps(run_body(("nap", {}), assigns={"pad": ""})).encode()
    return skeleton.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(skeleton)) + b'"')


async def test_bodies_over_one_mib_get_413_and_up_to_it_run(safe: Safe) -> None:
    async with safe.client() as http:
        at_limit = padded(MiB)
        assert len(at_limit) == MiB
        headers = {"content-type": "application/json"}
        ok = await http.post("/runs", content=at_limit, headers=headers)
        assert ok.status_code == 200, ok.text[:300]
        over = await http.post("/runs", content=padded(MiB + 1), headers=headers)
        assert over.status_code == 413
        assert "1,048,576 bytes" in over.json()["detail"]
        assert "CRUCIBLE_SERVICE_MAX_BODY_BYTES" in over.json()["detail"]

        async def fifty_mib() -> AsyncIterator[bytes]:  # chunked: no Content-Length
            yield b'{"experiment": {"id": "big", "pipeline": []}, "assigns": {"pad": "'
            for _ in range(50):
                yield b"x" * MiB
            yield b'"}}'

        chunked = await http.post("/runs", content=fifty_mib(), headers=headers)
        assert chunked.status_code == 413, chunked.text[:300]
        assert (await http.get("/runs", params={"experiment_id": "big"})).json()["runs"] == []


async def test_a_chunked_body_is_refused_once_past_the_limit_not_when_complete(safe: Safe) -> None:
    """The client sends 2 MiB of a body that never ends; the 413 comes anyway."""
    netloc = httpx.URL(safe.url).netloc
    host, port = netloc.decode().split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /runs HTTP/1.1\r\nHost: "
        + netloc
        + b"\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 65536
    for _ in range(32):
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
    assert head.startswith(b"HTTP/1.1 413 "), head
    writer.close()


async def test_the_body_goes_through_the_loader_limits(safe: Safe) -> None:
    async with safe.client() as http:
        deep: dict[str, Any] = {}
        for _ in range(100):
            deep = {"d": deep}
        resp = await http.post("/runs", json=run_body(("nap", {}), exp={"metadata": deep}))
        problem = one_problem(resp)
        assert problem["field"] == "body"
        assert "nested deeper than 64 levels" in problem["message"]

        duplicated = b'{"experiment": {"id": "a", "id": "b", "pipeline": []}}'
        resp = await http.post("/runs", content=duplicated, headers=JSON)
        problem = one_problem(resp)
        assert problem["message"] == (
            "line 1, column 28: experiment: duplicate key 'id' (first on line 1)"
        )

        brackets = b"[" * 100_000  # the standard JSON parser would recurse once per bracket
        problem = one_problem(await http.post("/runs", content=brackets, headers=JSON))
        assert problem["message"] == "line 1, column 65: nested deeper than 64 levels"

        latin1 = '{"experiment": {"id": "é"}}'.encode("latin-1")
        assert (
            "not UTF-8"
            in one_problem(await http.post("/runs", content=latin1, headers=JSON))["message"]
        )


async def test_smaller_loader_limits_from_the_settings() -> None:
    settings = ServiceSettings.defaults(max_values=50, max_string_chars=100, max_body_bytes=4096)
    app = create_app(registry=Registry(DEMO_STAGES), settings=settings, tracing=False)
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            many = await http.post("/runs", json=run_body(("nap", {}), assigns={"n": [0] * 60}))
            assert "more than 50 values" in one_problem(many)["message"]
            long = await http.post("/runs", json=run_body(("nap", {}), assigns={"s": "y" * 101}))
            assert "a value of 101 characters; the limit is 100" in one_problem(long)["message"]
            big = await http.post("/runs", content=b" " * 4097)
            assert big.status_code == 413 and "4,096 bytes" in big.json()["detail"]
            ok = await http.post("/runs", json=run_body(("nap", {}), assigns={"n": [0] * 10}))
            assert ok.status_code == 200, ok.text


# --- the stage allow-list --------------------------------------------------------------------


async def test_only_allow_listed_stages_run_and_never_imported_ones(safe: Safe) -> None:
    assert "not_offered" not in DEFAULT_STAGES
    async with safe.client() as http:
        resp = await http.post(
            "/runs", json=run_body(("nap", {}), ("not_offered", {}), run_id="refused")
        )
        problem = one_problem(resp)
        assert problem["stage"] == "not_offered" and problem["field"] == "experiment.pipeline[1]"
        assert problem["message"].startswith("unknown stage 'not_offered': this service offers")
        assert "CRUCIBLE_SERVICE_STAGES" in problem["message"]

        imported = {
            "experiment": {
                "id": "imp",
                "pipeline": [{"name": "ok", "module": "tests.support.cli_stages:ok_stage"}],
            },
            "run_id": "imported",
        }
        problem = one_problem(await http.post("/runs", json=imported))
        assert problem["field"] == "experiment.pipeline[0].module"
        assert "never imports code" in problem["message"]
        for run_id in ("refused", "imported"):
            assert (await http.get(f"/runs/{run_id}")).status_code == 404  # nothing ran

    narrow = ServiceSettings.defaults(stages="nap, tally")
    app = create_app(registry=Registry(DEMO_STAGES, discover=True), settings=narrow, tracing=False)
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            problem = one_problem(await http.post("/runs", json=run_body(("report", {}))))
            assert (
                "unknown stage 'report': this service offers only nap, tally"
                in (problem["message"])
            )
            ok = await http.post("/runs", json=run_body(("nap", {}), ("tally", {})))
            assert ok.status_code == 200, ok.text


async def test_secret_values_are_scrubbed_from_answers(safe: Safe) -> None:
    async with safe.client() as http:
        resp = await http.post(
            "/runs",
            json=run_body(
                ("boom", {"message": f"upstream said {SECRET}"}),
                assigns={"api_key": SECRET},
                run_id="leaky",
            ),
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["failure"]["error"] == "RuntimeError: upstream said [REDACTED]"
        assert SECRET not in resp.text
        stored = await http.get("/runs/leaky")
        assert stored.status_code == 200 and "assigns" not in stored.json()


async def test_secrets_anywhere_in_the_experiment_are_scrubbed_from_answers(safe: Safe) -> None:
    meta, url_pw = "meta-pw-NEVER-SHOWN-1", "url-pw-NEVER-SHOWN-2"
    exp = {
        "metadata": {"password": meta},
        "backend": {"id": "llm", "endpoint_url": f"https://svc:{url_pw}@llm.example/"},
    }
    async with safe.client() as http:
        resp = await http.post("/runs", json=run_body(
            ("tally", {}), exp=exp, assigns={"numbers": [1], "tag": f"{meta} {url_pw}"},
        ))  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.json()["metrics"]["tag"] == "[REDACTED] [REDACTED]"  # echoed by a metric
    assert meta not in resp.text and url_pw not in resp.text


# --- graceful shutdown, as deployed ----------------------------------------------------------


def service_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
    env.pop("TRACEPARENT", None)
    return env | {
        "OTEL_TRACES_EXPORTER": "none",
        "CRUCIBLE_STORE_URL": str(tmp_path / "runs.db"),
        "CRUCIBLE_EXPERIMENTS_DIR": str(tmp_path),
        "CRUCIBLE_SERVICE_REPORTS_DIR": str(tmp_path / "reports"),
        "CRUCIBLE_SERVICE_TOKEN": TOKEN,
    }


@pytest.mark.parametrize(
    ("nap_s", "grace_s", "expected"), [(600, 2, "cancelled"), (1.5, 120, "completed")]
)
async def test_sigterm_ends_the_run_and_the_process_within_the_graceful_timeout(
    tmp_path: Path, nap_s: float, grace_s: int, expected: str
) -> None:
    args = ("--timeout-graceful-shutdown", str(grace_s))
    run_id = f"long-{expected}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        uvicorn_process("examples.service:app", *args, env=service_env(tmp_path)) as srv,
        httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=300) as http,
    ):
        posted = asyncio.create_task(
            http.post("/runs", json=run_body(("nap", {"seconds": nap_s}), run_id=run_id))
        )
        status = None
        while status != "running":  # the run has started and is stored as running
            assert not posted.done(), posted.result().text
            got = await http.get(f"/runs/{run_id}")
            status = got.json().get("status") if got.status_code == 200 else None
            await asyncio.sleep(0.05)
        srv.proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        code = await srv.wait_exit(within_s=grace_s + 60)
        took = time.monotonic() - stopped_at
        try:
            answer: httpx.Response | None = await posted
        except httpx.HTTPError:  # the server went away before answering
            answer = None
    assert code in (0, -signal.SIGTERM), srv.text()  # uvicorn re-raises the signal it got
    assert took < grace_s + 30, (took, srv.text())  # not the 600 s nap
    async with RunStore(tmp_path / "runs.db") as store:
        info = await store.get_run(run_id)
    assert info is not None and info.status == expected, srv.text()
    assert info.finished_at is not None
    assert [a.result for a in info.attempts] == [
        "cancellation" if expected == "cancelled" else "success"
    ]
    if expected == "completed":
        assert answer is not None and answer.status_code == 200
        assert answer.json()["status"] == "completed"
    assert TOKEN not in srv.text()
    assert "Application startup complete" in srv.text()


async def test_text_utf8_cannot_hold_is_answered_escaped_not_a_500(safe: Safe) -> None:
    body = run_body(("tally", {}), assigns={"numbers": [1], "tag": "a\ud800b"}, run_id="half")
    async with safe.client() as http:
        resp = await http.post("/runs", content=json.dumps(body).encode("ascii"),
                               headers={"content-type": "application/json"})  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert resp.json()["metrics"]["tag"] == "a\ud800b"
        for path in ("/runs/half", "/runs"):
            answer = await http.get(path)
            assert answer.status_code == 200, (path, answer.text)
        assert (await http.get("/runs/half")).json()["metrics"]["tag"] == "a\ud800b"


async def test_a_client_cannot_overwrite_another_runs_report(safe: Safe) -> None:
    def body(run_id: str, path: str | None) -> dict[str, Any]:
        options = {} if path is None else {"path": path}
        output = {"name": "summary", "formats": ["markdown"], "options": options}
        return run_body(("load_examples", {"path": "rows.jsonl"}), ("report", {"out_dir": "."}),
                        run_id=run_id, exp={"outputs": [output]})  # fmt: skip

    async with safe.client() as http:
        first = await http.post("/runs", json=body("victim", None))
        assert first.status_code == 200, first.text
        victim = safe.reports / "safety-victim-summary.md"
        before = victim.read_bytes()
        problem = one_problem(await http.post("/runs", json=body("thief", victim.name)))
        assert problem["field"] == "experiment.outputs[0].options.path"
        assert "never overwrites" in problem["message"]
        assert victim.read_bytes() == before
        assert (await http.get("/runs/thief")).status_code == 404  # refused before it ran
        mine = await http.post("/runs", json=body("own-name", "chosen.md"))  # a new name: fine
        assert mine.status_code == 200, mine.text
    assert (safe.reports / "chosen.md").exists()


async def test_two_runs_racing_for_one_report_path_never_overwrite_each_other(safe: Safe) -> None:
    # Both pass the pre-flight check (the file does not exist yet); the slower one must fail,
    # not replace the faster one's report.
    def body(tag: str, seconds: float) -> dict[str, Any]:
        output = {"name": "s", "formats": ["json"], "options": {"path": "race.json"}}
        return run_body(("nap", {"seconds": seconds}), ("report", {"out_dir": "."}),
                        run_id=f"race-{tag}", exp={"outputs": [output]})  # fmt: skip

    async with safe.client() as http:
        fast, slow = await asyncio.gather(http.post("/runs", json=body("fast", 0.2)),
                                          http.post("/runs", json=body("slow", 0.8)))  # fmt: skip
    assert fast.status_code == slow.status_code == 200, (fast.text, slow.text)
    assert fast.json()["status"] == "completed" and slow.json()["status"] == "failed"
    assert "already exists" in slow.text and str(safe.reports) not in slow.text
    assert json.loads((safe.reports / "race.json").read_text())["run_id"] == "race-fast"


async def test_ids_that_map_to_another_runs_report_name_fail_instead_of_replacing_it(
    safe: Safe,
) -> None:
    output = {"name": "summary", "formats": ["markdown"]}
    async with safe.client() as http:
        first = await http.post("/runs", json=run_body(
            ("report", {"out_dir": "."}), run_id="r:abc", exp={"outputs": [output]}))  # fmt: skip
        assert first.json()["status"] == "completed", first.text
        report = safe.reports / "safety-r_abc-summary.md"  # ':' is not safe in a file name
        before = report.read_bytes()
        second = await http.post("/runs", json=run_body(
            ("report", {"out_dir": "."}), run_id="r_abc", exp={"outputs": [output]}))  # fmt: skip
    assert second.json()["status"] == "failed" and "already exists" in second.text
    assert report.read_bytes() == before


@pytest.mark.parametrize(
    ("path", "formats"), [("", ["markdown", "json"]), (".", ["markdown", "json"]),
                          ("/", ["markdown", "json"]), ("a\x00b", ["markdown"])],
)  # fmt: skip
async def test_an_output_path_that_names_no_file_is_a_422_not_a_500(
    safe: Safe, path: str, formats: list[str]
) -> None:
    output = {"name": "s", "formats": formats, "options": {"path": path}}
    async with safe.client() as http:
        resp = await http.post("/runs", json=run_body(("report", {}), exp={"outputs": [output]}))
    problem = one_problem(resp)
    assert problem["field"] == "experiment.outputs[0].options.path", problem


async def test_a_pipeline_longer_than_max_stages_is_a_422_before_anything_runs(
    safe: Safe,
) -> None:
    async with safe.client() as http:
        long = run_body(*[("tally", {})] * 101)
        problem = one_problem(await http.post("/runs", json=long))
        at_limit = await http.post("/runs", json=run_body(*[("tally", {})] * 100))
    assert problem["field"] == "experiment.pipeline" and "at most 100" in problem["message"]
    assert at_limit.status_code == 200, at_limit.text
