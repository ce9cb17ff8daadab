"""A FastAPI service that runs Crucible experiments inside its requests, safe to expose.

Run it with ``uvicorn examples.service:app --timeout-graceful-shutdown 30``; telemetry then
comes from the ``OTEL_*`` variables (see ``crucible.telemetry.setup.configure``), the run store
from ``CRUCIBLE_STORE_URL`` (``none`` turns it off), named experiments from
``CRUCIBLE_EXPERIMENTS_DIR`` (default: this folder), what the service allows from the
``CRUCIBLE_SERVICE_*`` variables (``examples.service_settings``: data and reports folders,
token, body limit, stage allow-list) and log lines are JSON unless ``CRUCIBLE_LOG_FORMAT=console``.
Tests and benchmarks build their own app with ``create_app(...)``; importing this module
configures nothing.

``POST /runs`` runs one experiment and answers when it has finished:

* ``{"experiment": {...}}`` or ``{"name": "quickstart"}`` (``<experiments_dir>/quickstart.yaml``,
  ``.yml``, ``.json`` or ``.toml``), plus optional ``run_id``, ``assigns`` and ``timeout`` (s).
* 200 ``{"run_id", "experiment_id", "trace_id", "status": "completed", "metrics"}``.
* 200 with ``status`` ``failed`` or ``timed_out`` and ``failure: {stage, result, error}`` when a
  stage fails: the service call worked, the experiment did not. ``metrics`` are the last good ones.
* 422 ``{"detail", "problems": [...]}`` for a bad body (invalid JSON, duplicate keys, too deep or
  too big for the loader's limits), an invalid experiment file or an invalid pipeline (a stage
  not on the allow-list, a ``module:`` import, bad options, a path outside the service's
  folders, an import-path option, a report path outside the reports folder); nothing ran. 404
  for an unknown name, 409 for a run id the store already has, 413 for a body over the limit,
  415 for one not sent as ``application/json``, 401 without the token (when one is set), 421
  for a Host the service does not answer to (``ServiceSettings.allowed_hosts``).
* If the client disconnects, the run is cancelled (stored as ``cancelled``) and the answer,
  which nobody reads, is 499. If the service stops first, it is cancelled too (503).

``GET /runs/{run_id}`` and ``GET /runs`` return stored runs: status, ids, metrics, stage results
and artifact names, never assigns or options (404 unknown, 503 without a store). ``GET /health``
needs no token.

The request's SERVER span (OpenTelemetry FastAPI instrumentation, continuing the caller's
``traceparent``) is the parent of the run's ``RUN`` span. Values under secret-looking keys are
redacted and request bodies are never echoed back.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import quote

import anyio
import structlog
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.types import Receive, Scope

import crucible
import crucible.logging
from crucible import (
    Context,
    Experiment,
    ExperimentFileError,
    InvalidPipeline,
    Registry,
    StageFailed,
    load_experiment,
)
from crucible.engine import new_run_id
from crucible.errors import DuplicateRun, format_location
from crucible.experiment.json_toml import load_json
from crucible.experiment.limits import structure_problem
from crucible.files import FileAccess
from crucible.scrub import Scrubber, for_experiment
from crucible.serialize import to_jsonable
from crucible.store import RunStore, StoreError
from crucible.telemetry import setup as telemetry_setup
from examples.service_checks import Problem, pipeline_problems, preflight, stage_problems
from examples.service_guard import AllowedHosts, BearerToken, BodyLimit
from examples.service_settings import ServiceSettings
from examples.service_stages import STAGES as DEMO_STAGES
from examples.service_views import NO_MASK, PathMask, public_run, scrub
from examples.service_views import AsciiJSON as JSONResponse

__all__ = [
    "Failure",
    "Problem",
    "RunRequest",
    "RunResult",
    "ServiceSettings",
    "app",
    "create_app",
    "find_experiment_file",
]

NAME_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
RUN_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
EXPERIMENT_SUFFIXES: Final = (".yaml", ".yml", ".json", ".toml")
CLIENT_CLOSED_REQUEST: Final = 499  # nginx's code; the client never sees it
SHUTDOWN_WAIT_S: Final = 10.0  # for cancelled runs to record themselves before the store closes
_NAME = re.compile(NAME_PATTERN)
_log = structlog.get_logger("crucible.service")


# --- request and response bodies -------------------------------------------------------------


class RunRequest(BaseModel):
    """What to run: an inline experiment or the name of a file in the experiments folder."""

    model_config = ConfigDict(extra="forbid")

    experiment: Experiment | None = None
    name: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=128)
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN, max_length=128)
    assigns: dict[str, Any] | None = None
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.experiment is None) == (self.name is None):
            raise ValueError("give exactly one of 'experiment' (a mapping) or 'name'")
        return self


class Failure(BaseModel):
    """The stage that ended a failed run, how (failure, error, timeout) and why."""

    stage: str
    result: str
    error: str


class RunResult(BaseModel):
    """The answer to ``POST /runs``."""

    run_id: str
    experiment_id: str
    trace_id: str | None
    status: Literal["completed", "failed", "timed_out"]
    metrics: dict[str, Any]
    failure: Failure | None = None


def _problem_response(status: int, detail: str, problems: Sequence[Problem]) -> JSONResponse:
    body = {"detail": detail, "problems": [p.model_dump(exclude_none=True) for p in problems]}
    return JSONResponse(status_code=status, content=body)


def _detail(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


def _is_json(content_type: str | None) -> bool:
    """``application/json``, with parameters or not (a form or text/plain post is not JSON)."""
    media = (content_type or "").partition(";")[0]
    return media.strip().lower() == "application/json"


def _exists(run_id: str) -> JSONResponse:
    return _detail(409, f"run {run_id!r} already exists", run_id=run_id)


def _field_of(loc: Sequence[int | str]) -> str:
    """``("body", "experiment", "pipeline", 0, "name")`` -> ``experiment.pipeline[0].name``."""
    inner = list(loc[1:]) if loc and loc[0] == "body" else list(loc)
    return format_location(inner, empty="body")


def validation_problems(errors: Sequence[Any]) -> list[Problem]:
    """FastAPI's validation errors as problems, without the ``input`` (it may hold secrets)."""
    problems: list[Problem] = []
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "")
            problems.append(Problem(field="body", message=f"invalid JSON: {reason}".rstrip(": ")))
        else:
            problems.append(Problem(field=_field_of(err.get("loc", ())), message=err["msg"]))
    return problems


def parse_body(raw: bytes, settings: ServiceSettings) -> RunRequest | list[Problem]:
    """The body as a RunRequest, through the experiment loader's limits (depth, duplicate keys,
    values, string length); or the problems, each naming where."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return [Problem(message=f"not UTF-8 text (byte {err.start})", field="body")]
    limits = settings.document_limits()
    try:
        data = load_json(text, source="request body", limits=limits)
    except ExperimentFileError as err:
        return [Problem(message=message, field="body") for message in err.errors]
    problem = structure_problem(data, limits)
    if problem is not None:
        return [Problem(message=problem, field="body")]
    try:
        return RunRequest.model_validate(data)
    except ValidationError as err:
        return validation_problems(err.errors(include_input=False))


# --- experiments by name ---------------------------------------------------------------------


def find_experiment_file(directory: Path, name: str) -> Path | None:
    """``<directory>/<name>.(yaml|yml|json|toml)``; None if absent. Never leaves ``directory``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"experiment names must match {NAME_PATTERN}")
    root = directory.resolve()
    for suffix in EXPERIMENT_SUFFIXES:
        candidate = root / f"{name}{suffix}"
        if candidate.is_file() and candidate.resolve().is_relative_to(root):
            return candidate
    return None


@dataclass
class _ExperimentCache:
    """Parsed experiment files, reloaded when their mtime or size changes.

    Reusing the same Experiment object also lets the engine reuse its validated plan.
    """

    entries: dict[Path, tuple[int, int, Experiment]] = field(default_factory=dict)

    async def load(self, path: Path) -> Experiment:
        try:
            stat = await anyio.Path(path).stat()
        except OSError:  # gone since it was found: let the loader say so
            self.entries.pop(path, None)
            return await anyio.to_thread.run_sync(load_experiment, path)
        hit = self.entries.get(path)
        if hit is not None and hit[:2] == (stat.st_mtime_ns, stat.st_size):
            return hit[2]
        experiment = await anyio.to_thread.run_sync(load_experiment, path)
        self.entries[path] = (stat.st_mtime_ns, stat.st_size, experiment)
        return experiment


# --- running a request's experiment until the client goes away -------------------------------


@dataclass
class _Outcome:
    context: Context | None = None
    error: Exception | None = None
    disconnected: bool = False


async def _wait_for_disconnect(receive: Receive) -> None:
    """Return when the ASGI server reports ``http.disconnect`` (the body was already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        await anyio.sleep(0.05)  # a server answering at once must not starve the event loop


async def run_until_disconnect(
    receive: Receive, work: Callable[[], Awaitable[Context]]
) -> _Outcome:
    """Await ``work()``, cancelling it if the client disconnects first.

    Starlette does not cancel a handler whose client went away, so a watcher task listens on
    ``receive`` and cancels the task group's scope. The engine records the cancelled run (its
    store write is shielded) and re-raises the cancellation, which this scope then absorbs.
    """
    outcome = _Outcome()
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            try:
                await _wait_for_disconnect(receive)
            except Exception as err:  # a server without disconnect messages: stop watching
                _log.debug("cannot watch for client disconnect", error=repr(err))
                return
            outcome.disconnected = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            outcome.context = await work()
        except Exception as err:
            outcome.error = err
        tg.cancel_scope.cancel()  # the run is over: stop the watcher
    return outcome


# --- the application -------------------------------------------------------------------------


@dataclass
class _Running:
    """A run in progress: the scope that cancels it and the event set when it has ended."""

    scope: anyio.CancelScope
    done: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class _Service:
    store: RunStore | None
    source: Registry  # every stage the service could offer; the allow-list picks from it
    tracer_provider: TracerProvider | None
    experiments_dir: Path | None
    settings: ServiceSettings = field(default_factory=ServiceSettings.defaults)
    offered: Registry = field(default_factory=Registry)
    experiments: _ExperimentCache = field(default_factory=_ExperimentCache)
    running: dict[str, _Running] = field(default_factory=dict)
    stopping: bool = False
    accesses: dict[Path | None, FileAccess] = field(default_factory=dict)
    paths: PathMask = NO_MASK

    def configure(self, settings: ServiceSettings) -> None:
        """Take ``settings``: the offered stages are the allow-listed ones ``source`` has."""
        self.settings = settings
        self.accesses.clear()
        self.paths = PathMask({"data": settings.data_dir, "reports": settings.reports_dir,
                               "experiments": self.experiments_dir})  # fmt: skip
        self.offered, missing = settings.offered(self.source)
        if missing:
            _log.warning("allow-listed stages are not installed", stages=missing)

    def file_access(self, experiment_dir: Path | None) -> FileAccess:
        """The settings' file access, resolved once per experiment folder (not per request)."""
        access = self.accesses.get(experiment_dir)
        if access is None:
            access = self.accesses[experiment_dir] = self.settings.file_access(experiment_dir)
        return access

    def run_url(self, scope: Scope, run_id: str) -> str:
        """The run's ``GET /runs/{id}`` link: under ``settings.public_url``, else the address
        this server listens on; never the client's Host header."""
        base = self.settings.public_url
        if base is None:
            server = scope.get("server")
            host, port = (server[0], server[1]) if server else ("127.0.0.1", None)
            host = f"[{host}]" if ":" in str(host) else str(host)
            base = f"{scope.get('scheme', 'http')}://{host}" + (f":{port}" if port else "")
            base += scope.get("root_path", "")
        return f"{base}/runs/{quote(run_id, safe=':')}"

    def token(self) -> bytes | None:
        token = self.settings.token
        return token.get_secret_value().encode() if token is not None else None

    async def claim(self, run_id: str, *, stored: bool) -> _Running | Response:
        """Reserve ``run_id`` for one request, or the 409 that refuses it (``stored``: ask the
        store too). The id is reserved before the store is asked, so of two requests for one id
        the second always sees the first, running or stored."""
        if run_id in self.running:
            return _detail(409, f"run {run_id!r} is running", run_id=run_id)
        running = self.running[run_id] = _Running(anyio.CancelScope())
        try:
            found = stored and self.store is not None and await self.store.get_run(run_id)
        except BaseException:
            self.release(run_id, running)
            raise
        if found:
            self.release(run_id, running)
            return _exists(run_id)
        return running

    def release(self, run_id: str, running: _Running) -> None:
        """End ``run_id``'s reservation (its run has ended, or never started)."""
        del self.running[run_id]
        running.done.set()

    async def stop_runs(self) -> None:
        """Cancel the runs still in progress and wait (bounded) until they have recorded it."""
        self.stopping = True
        for run in self.running.values():
            run.scope.cancel()
        with anyio.move_on_after(SHUTDOWN_WAIT_S):
            for run in list(self.running.values()):
                await run.done.wait()
        if self.running:
            _log.warning("runs still ending at shutdown", run_ids=sorted(self.running))


def _result(ctx: Context, secrets: set[str], paths: PathMask) -> dict[str, Any]:
    return {
        "run_id": ctx.run_id,
        "experiment_id": ctx.experiment_id,
        "trace_id": ctx.trace.trace_id if ctx.trace is not None else None,
        # secret-looking keys redacted (NaN-safe), values the request marked secret scrubbed
        "metrics": paths.value(Scrubber(secrets).value(to_jsonable(dict(ctx.metrics)))),
    }


def _failed(
    err: StageFailed, run_id: str, experiment: Experiment, secrets: set[str], paths: PathMask
) -> dict[str, Any]:
    status = "timed_out" if err.result == "timeout" else "failed"
    error = paths.text(scrub(f"{type(err.cause).__name__}: {err.cause}", secrets)) or ""
    failure = Failure(stage=err.stage, result=err.result, error=error)
    if err.context is None:  # not produced by the engine, but keep the answer well-formed
        body: dict[str, Any] = {
            "run_id": run_id,
            "experiment_id": experiment.id,
            "trace_id": None,
            "metrics": {},
        }
    else:
        body = _result(err.context, secrets, paths)
    return RunResult(status=status, failure=failure, **body).model_dump(mode="json")


def _env_dir() -> Path:
    return Path(os.environ.get("CRUCIBLE_EXPERIMENTS_DIR") or Path(__file__).resolve().parent)


def create_app(
    *,
    store: RunStore | None = None,
    registry: Registry | None = None,
    tracer_provider: TracerProvider | None = None,
    experiments_dir: Path | None = None,
    settings: ServiceSettings | None = None,
    tracing: bool = True,
    from_env: bool = False,
) -> FastAPI:
    """Build the service.

    ``store``: where runs are recorded (None: not recorded, ``GET /runs/{id}`` answers 503).
    ``registry``: where the offered stages come from (None: the demo stages and the installed
    entry-point stages); only those on ``settings.stages`` are offered.
    ``tracer_provider``: for the request spans and the runs (None: the global provider).
    ``experiments_dir``: where ``{"name": ...}`` looks (None: names are unknown, 404).
    ``settings``: folders, token, limits, allow-list (None: ``ServiceSettings.defaults()``, or
    the ``CRUCIBLE_SERVICE_*`` environment with ``from_env``).
    ``tracing=False`` skips the FastAPI instrumentation (runs still get the engine's spans and
    ids, from ``tracer_provider`` or the engine's default); handy for overhead benchmarks.
    ``from_env=True`` is for the deployed app: at startup it reads its settings, configures
    logging and telemetry from the environment and, when ``store`` is None, opens
    ``CRUCIBLE_STORE_URL``; ``experiments_dir`` defaults to this folder.
    """
    if from_env:
        experiments_dir = experiments_dir if experiments_dir is not None else _env_dir()
    svc = _Service(
        store=store,
        source=registry if registry is not None else Registry(DEMO_STAGES, discover=True),
        tracer_provider=tracer_provider,
        experiments_dir=experiments_dir,
    )
    if settings is not None or not from_env:
        svc.configure(settings if settings is not None else ServiceSettings.defaults())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not from_env:
            try:
                yield
            finally:
                await svc.stop_runs()
            return
        if settings is None:
            svc.configure(ServiceSettings())  # CRUCIBLE_SERVICE_*; bad values stop the startup
        crucible.logging.configure(json=os.environ.get("CRUCIBLE_LOG_FORMAT", "json") == "json")
        # The instrumentation took its tracer from the global (proxy) provider when the app was
        # built; installing the configured provider globally is what makes that tracer record.
        # An application that already installed one (opentelemetry-instrument) keeps it.
        service_name = os.environ.get("OTEL_SERVICE_NAME") or "crucible-service"
        handle = telemetry_setup.configure(service_name, set_global=True)
        owned: RunStore | None = None
        url = os.environ.get("CRUCIBLE_STORE_URL")
        if svc.store is None and (url or "").lower() != "none":
            owned = svc.store = RunStore(url or None)
            await owned.open()
        _log.info(
            "service started",
            exporters=list(handle.exporters),
            store=repr(svc.store),
            stages=svc.offered.names(),
            token=svc.settings.token is not None,  # whether one is needed, never its value
        )
        try:
            yield
        finally:
            await svc.stop_runs()  # before the store closes: their last records go in
            if owned is not None:
                svc.store = None
                await owned.close()
            await anyio.to_thread.run_sync(handle.shutdown)

    app = FastAPI(
        title="Crucible service",
        description="Run Crucible experiments over HTTP; each run continues the request's trace.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    # Added last runs first: the Host, then the token, before any of the body is read.
    app.add_middleware(BodyLimit, limit_of=lambda: svc.settings.max_body_bytes)
    app.add_middleware(BearerToken, token_of=svc.token, open_paths=("/health",))
    app.add_middleware(AllowedHosts, hosts_of=lambda: svc.settings.allowed_hosts)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        return _problem_response(422, "invalid request", validation_problems(errors))

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness, without a token."""
        return {"status": "stopping" if svc.stopping else "ok"}

    @app.post(
        "/runs",
        response_model=RunResult,
        responses={
            c: {} for c in (400, 401, 404, 409, 413, 415, 421, 422, 503, CLIENT_CLOSED_REQUEST)
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "A RunRequest: experiment or name, run_id, assigns, timeout.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def post_run(request: Request) -> Response:
        """Run an experiment and answer with its outcome when it has finished."""
        if not _is_json(request.headers.get("content-type")):
            return _detail(415, "POST /runs takes JSON: send 'Content-Type: application/json'")
        parsed = parse_body(await request.body(), svc.settings)
        if isinstance(parsed, list):
            return _problem_response(422, "invalid request", parsed)
        body = parsed
        source: str | None = None  # the experiment file, for named runs
        experiment_dir: Path | None = None
        if body.experiment is not None:
            experiment = body.experiment
        else:
            assert body.name is not None  # RunRequest guarantees one of the two
            loaded = await _load_named(body.name)
            if isinstance(loaded, Response):
                return loaded
            experiment, path = loaded
            source, experiment_dir = path.name, path.parent
        refused = stage_problems(experiment, svc.offered.names(), source=source,
                                 max_stages=svc.settings.max_stages)  # fmt: skip
        if refused:
            return _problem_response(422, "stage not offered", refused)
        run_id = body.run_id or new_run_id()
        access = svc.file_access(experiment_dir)
        refused = preflight(experiment, svc.offered, access, run_id, source=source, paths=svc.paths)
        if refused:
            return _problem_response(422, "invalid pipeline", refused)
        secrets = set(for_experiment(experiment, body.assigns).values)  # the whole experiment's
        run_url = svc.run_url(request.scope, run_id)

        async def work() -> Context:
            return await crucible.run(
                experiment,
                run_id=run_id,
                assigns=body.assigns,
                registry=svc.offered,
                store=svc.store,
                tracer_provider=svc.tracer_provider,
                timeout=body.timeout,
                url=run_url.replace("{", "{{").replace("}", "}}"),
                file_access=access,
                allow_imports=False,
            )

        running = await svc.claim(run_id, stored=body.run_id is not None)
        if not isinstance(running, _Running):
            return running
        outcome = _Outcome()
        try:
            with running.scope:
                outcome = await run_until_disconnect(request.receive, work)
        finally:
            svc.release(run_id, running)
        if running.scope.cancelled_caught:
            _log.info("run cancelled: service stopping", run_id=run_id, status="cancelled")
            return _detail(503, "service stopping; the run was cancelled", run_id=run_id)
        if outcome.disconnected:
            _log.info("run cancelled: client disconnected", run_id=run_id, status="cancelled")
            return _detail(CLIENT_CLOSED_REQUEST, "client closed request", run_id=run_id)
        err = outcome.error
        if isinstance(err, DuplicateRun):  # stored by another process since claim() looked
            return _exists(run_id)
        if isinstance(err, InvalidPipeline):
            problems = pipeline_problems(err, source=source, paths=svc.paths)
            return _problem_response(422, "invalid pipeline", problems)
        if isinstance(err, StageFailed):
            answer = _failed(err, run_id, experiment, secrets, svc.paths)
            _log.info("run answered", run_id=run_id, status=answer["status"], stage=err.stage)
            return JSONResponse(answer)
        if err is not None:
            raise err
        assert outcome.context is not None
        _log.info("run answered", run_id=run_id, status="completed")
        done = RunResult(status="completed", **_result(outcome.context, secrets, svc.paths))
        return JSONResponse(done.model_dump(mode="json"))

    async def _load_named(name: str) -> tuple[Experiment, Path] | Response:
        if svc.experiments_dir is None:
            return _detail(404, f"unknown experiment {name!r} (no experiments folder configured)")
        path = await anyio.to_thread.run_sync(find_experiment_file, svc.experiments_dir, name)
        if path is None:
            return _detail(404, f"unknown experiment {name!r}")
        try:
            return await svc.experiments.load(path), path
        except ExperimentFileError as err:
            mask = svc.paths.text
            problems = [Problem(message=mask(m) or "", source=mask(err.path)) for m in err.errors]
            return _problem_response(422, "invalid experiment file", problems)

    @app.get("/runs/{run_id}", responses={401: {}, 404: {}, 503: {}})
    async def get_run(run_id: str) -> Response:
        """The stored run: status, ids, timings, metrics, stage results, artifact names."""
        if svc.store is None:
            return _detail(503, "no run store configured")
        try:
            info = await svc.store.get_run(run_id)
        except StoreError as err:
            _log.warning("run store read failed", run_id=run_id, error=str(err))
            return _detail(503, "run store unavailable")
        if info is None:
            return _detail(404, f"unknown run {run_id!r}")
        return JSONResponse(public_run(info, paths=svc.paths))

    @app.get("/runs", responses={401: {}, 503: {}})
    async def list_runs(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        experiment_id: Annotated[str | None, Query(max_length=256)] = None,
        status: Annotated[str | None, Query(max_length=32)] = None,
    ) -> Response:
        """The latest stored runs (newest first), each as ``GET /runs/{id}`` shows it."""
        if svc.store is None:
            return _detail(503, "no run store configured")
        try:
            infos = await svc.store.list_runs(
                limit=limit, experiment_id=experiment_id, status=status
            )
        except StoreError as err:
            _log.warning("run store read failed", error=str(err))
            return _detail(503, "run store unavailable")
        return JSONResponse({"runs": [public_run(info, paths=svc.paths) for info in infos]})

    if tracing:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, exclude_spans=["receive", "send"]
        )
    return app


app = create_app(from_env=True)
