"""A FastAPI service that runs Crucible experiments inside its requests.

Run it with ``uvicorn examples.service:app``; telemetry then comes from the ``OTEL_*`` variables
(see ``crucible.telemetry.setup.configure``), the run store from ``CRUCIBLE_STORE_URL`` (``none``
turns it off), named experiments from ``CRUCIBLE_EXPERIMENTS_DIR`` (default: this folder) and
log lines are JSON unless ``CRUCIBLE_LOG_FORMAT=console``. Tests and benchmarks build their own
app with ``create_app(...)``; importing this module configures nothing.

``POST /runs`` runs one experiment and answers when it has finished:

* ``{"experiment": {...}}`` or ``{"name": "quickstart"}`` (``<experiments_dir>/quickstart.yaml``,
  ``.yml``, ``.json`` or ``.toml``), plus optional ``run_id``, ``assigns`` and ``timeout`` (s).
* 200 ``{"run_id", "experiment_id", "trace_id", "status": "completed", "metrics"}``.
* 200 with ``status`` ``failed`` or ``timed_out`` and ``failure: {stage, result, error}`` when a
  stage fails: the service call worked, the experiment did not. ``metrics`` are the last good ones.
* 422 ``{"detail", "problems": [...]}`` for a bad body, an invalid experiment file or an invalid
  pipeline (unknown stage, bad options); nothing ran. 404 for an unknown name, 409 for a run id
  the store already has.
* If the client disconnects, the run is cancelled (stored as ``cancelled``) and the answer,
  which nobody reads, is 499.

``GET /runs/{run_id}`` returns the stored run (404 unknown, 503 without a store).

The request's SERVER span (OpenTelemetry FastAPI instrumentation, continuing the caller's
``traceparent``) is the parent of the run's ``RUN`` span. Values under secret-looking keys are
redacted and request bodies are never echoed back. Experiments cannot import code by path.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Self

import anyio
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import Receive

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
from crucible.errors import format_location
from crucible.serialize import to_jsonable
from crucible.store import RunStore, StoreError
from crucible.telemetry import setup as telemetry_setup
from examples.service_stages import STAGES as DEMO_STAGES

__all__ = [
    "Failure",
    "Problem",
    "RunRequest",
    "RunResult",
    "app",
    "create_app",
    "find_experiment_file",
]

NAME_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
RUN_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
EXPERIMENT_SUFFIXES: Final = (".yaml", ".yml", ".json", ".toml")
CLIENT_CLOSED_REQUEST: Final = 499  # nginx's code; the client never sees it
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


class Problem(BaseModel):
    """One thing wrong with a request: where (field, stage) and what."""

    message: str
    field: str | None = None
    stage: str | None = None
    stage_index: int | None = None
    source: str | None = None


def _problem_response(status: int, detail: str, problems: Sequence[Problem]) -> JSONResponse:
    body = {"detail": detail, "problems": [p.model_dump(exclude_none=True) for p in problems]}
    return JSONResponse(status_code=status, content=body)


def _detail(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


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


def pipeline_problems(err: InvalidPipeline, *, source: str | None = None) -> list[Problem]:
    """An InvalidPipeline's problems; ``field`` is a path in the request body, or in ``source``."""
    prefix = "" if source is not None else "experiment."
    problems = []
    for p in err.problems:
        where = None
        if p.stage_index is not None:
            where = f"{prefix}pipeline[{p.stage_index}]" + (f".options.{p.path}" if p.path else "")
        problems.append(
            Problem(
                message=p.message,
                field=where,
                stage=p.stage,
                stage_index=p.stage_index,
                source=source,
            )
        )
    return problems


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
class _Service:
    store: RunStore | None
    registry: Registry
    tracer_provider: TracerProvider | None
    experiments_dir: Path | None
    experiments: _ExperimentCache = field(default_factory=_ExperimentCache)


def _result(ctx: Context) -> dict[str, Any]:
    return {
        "run_id": ctx.run_id,
        "experiment_id": ctx.experiment_id,
        "trace_id": ctx.trace.trace_id if ctx.trace is not None else None,
        "metrics": to_jsonable(dict(ctx.metrics)),  # redacts secret-looking keys, NaN-safe
    }


def _failed(err: StageFailed, run_id: str, experiment: Experiment) -> dict[str, Any]:
    status = "timed_out" if err.result == "timeout" else "failed"
    failure = Failure(
        stage=err.stage, result=err.result, error=f"{type(err.cause).__name__}: {err.cause}"
    )
    if err.context is None:  # not produced by the engine, but keep the answer well-formed
        body: dict[str, Any] = {
            "run_id": run_id,
            "experiment_id": experiment.id,
            "trace_id": None,
            "metrics": {},
        }
    else:
        body = _result(err.context)
    return RunResult(status=status, failure=failure, **body).model_dump(mode="json")


def _env_dir() -> Path:
    return Path(os.environ.get("CRUCIBLE_EXPERIMENTS_DIR") or Path(__file__).resolve().parent)


def create_app(
    *,
    store: RunStore | None = None,
    registry: Registry | None = None,
    tracer_provider: TracerProvider | None = None,
    experiments_dir: Path | None = None,
    tracing: bool = True,
    from_env: bool = False,
) -> FastAPI:
    """Build the service.

    ``store``: where runs are recorded (None: not recorded, ``GET /runs/{id}`` answers 503).
    ``registry``: the stages runs may use (None: ``crucible.default_registry()``).
    ``tracer_provider``: for the request spans and the runs (None: the global provider).
    ``experiments_dir``: where ``{"name": ...}`` looks (None: names are unknown, 404).
    ``tracing=False`` skips the FastAPI instrumentation (runs still get the engine's spans and
    ids, from ``tracer_provider`` or the engine's default); handy for overhead benchmarks.
    ``from_env=True`` is for the deployed app: at startup it configures logging and telemetry
    from the environment and, when ``store`` is None, opens ``CRUCIBLE_STORE_URL``; the demo
    stages join the built-in ones and ``experiments_dir`` defaults to this folder.
    """
    if from_env:
        registry = registry if registry is not None else Registry(DEMO_STAGES, discover=True)
        experiments_dir = experiments_dir if experiments_dir is not None else _env_dir()
    svc = _Service(
        store=store,
        registry=registry if registry is not None else crucible.default_registry(),
        tracer_provider=tracer_provider,
        experiments_dir=experiments_dir,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not from_env:
            yield
            return
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
        _log.info("service started", exporters=list(handle.exporters), store=repr(svc.store))
        try:
            yield
        finally:
            if owned is not None:
                svc.store = None
                await owned.close()
            await anyio.to_thread.run_sync(handle.shutdown)

    app = FastAPI(
        title="Crucible service",
        description="Run Crucible experiments over HTTP; each run continues the request's trace.",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        return _problem_response(422, "invalid request", validation_problems(errors))

    @app.post(
        "/runs",
        response_model=RunResult,
        responses={404: {}, 409: {}, 422: {}, CLIENT_CLOSED_REQUEST: {}},
    )
    async def post_run(body: RunRequest, request: Request) -> Response:
        """Run an experiment and answer with its outcome when it has finished."""
        source: str | None = None  # the experiment file, for named runs
        if body.experiment is not None:
            experiment = body.experiment
        else:
            assert body.name is not None  # RunRequest guarantees one of the two
            loaded = await _load_named(body.name)
            if isinstance(loaded, Response):
                return loaded
            experiment, source = loaded
        run_id = body.run_id or new_run_id()
        store = svc.store
        if body.run_id is not None and store is not None and await store.get_run(run_id):
            return _detail(409, f"run {run_id!r} already exists", run_id=run_id)

        run_url = str(request.url_for("get_run", run_id=run_id))

        async def work() -> Context:
            return await crucible.run(
                experiment,
                run_id=run_id,
                assigns=body.assigns,
                registry=svc.registry,
                store=svc.store,
                tracer_provider=svc.tracer_provider,
                timeout=body.timeout,
                url=run_url.replace("{", "{{").replace("}", "}}"),
            )

        outcome = await run_until_disconnect(request.receive, work)
        if outcome.disconnected:
            _log.info("run cancelled: client disconnected", run_id=run_id, status="cancelled")
            return _detail(CLIENT_CLOSED_REQUEST, "client closed request", run_id=run_id)
        err = outcome.error
        if isinstance(err, InvalidPipeline):
            return _problem_response(422, "invalid pipeline", pipeline_problems(err, source=source))
        if isinstance(err, StageFailed):
            answer = _failed(err, run_id, experiment)
            _log.info("run answered", run_id=run_id, status=answer["status"], stage=err.stage)
            return JSONResponse(answer)
        if err is not None:
            raise err
        assert outcome.context is not None
        _log.info("run answered", run_id=run_id, status="completed")
        done = RunResult(status="completed", **_result(outcome.context))
        return JSONResponse(done.model_dump(mode="json"))

    async def _load_named(name: str) -> tuple[Experiment, str] | Response:
        if svc.experiments_dir is None:
            return _detail(404, f"unknown experiment {name!r} (no experiments folder configured)")
        path = await anyio.to_thread.run_sync(find_experiment_file, svc.experiments_dir, name)
        if path is None:
            return _detail(404, f"unknown experiment {name!r}")
        try:
            return await svc.experiments.load(path), path.name
        except ExperimentFileError as err:
            problems = [Problem(message=m, source=err.path) for m in err.errors]
            return _problem_response(422, "invalid experiment file", problems)

    @app.get("/runs/{run_id}", responses={404: {}, 503: {}})
    async def get_run(run_id: str) -> Response:
        """The stored run: status, timings, trace id, metrics, stage attempts, artifacts."""
        if svc.store is None:
            return _detail(503, "no run store configured")
        try:
            info = await svc.store.get_run(run_id)
        except StoreError as err:
            _log.warning("run store read failed", run_id=run_id, error=str(err))
            return _detail(503, "run store unavailable")
        if info is None:
            return _detail(404, f"unknown run {run_id!r}")
        return JSONResponse(to_jsonable(info.to_dict()))

    if tracing:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, exclude_spans=["receive", "send"]
        )
    return app


app = create_app(from_env=True)
