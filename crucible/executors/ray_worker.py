"""The Ray actor that runs batch jobs: one event loop per actor, many runs at once.

Each actor sets up telemetry once from the driver's ``OTEL_*`` settings (Ray's ``runtime_env``
carries them), exports straight to the collector, and marks every span it makes with
``cicd.worker.id``/``cicd.worker.name`` (its Ray actor) and ``crucible.worker.node`` (its node).
Runs use ``run_job``, exactly as in-process; their store is a RunStore of the driver's URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import structlog
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Link

from crucible.executors.base import RunJob, RunOutcome
from crucible.executors.local import run_job
from crucible.executors.shipping import WireOutcome, to_wire, worker_kwargs, worker_registry
from crucible.observers import Observers
from crucible.registry import Registry
from crucible.slots import Slots
from crucible.telemetry import conventions as names
from crucible.telemetry.carrier import parent_context

_log = structlog.get_logger("crucible.executors.ray")


@dataclass(frozen=True)
class BatchSpec:
    """What every chunk of one batch shares (sent once per batch through Ray's object store)."""

    batch_id: str
    as_children: bool
    carrier: Mapping[str, str]
    stages: bytes
    run_kwargs: Mapping[str, Any]
    store_url: str | None
    journal_dir: str | None
    return_contexts: bool


class WorkerAttributes(SpanProcessor):
    """Sets the worker's attributes on every span this process starts."""

    def __init__(self, attributes: Mapping[str, str]) -> None:
        self._attributes = dict(attributes)

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        span.set_attributes(self._attributes)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass
class _Batch:
    spec: BatchSpec
    registry: Registry
    run_kwargs: dict[str, Any]
    parent: otel_context.Context
    links: list[Link]
    limiter: Slots
    watchers: Observers
    scopes: set[anyio.CancelScope]
    cancelled: bool = False


class RunActor:
    """A Ray async actor (``ray.remote(RunActor)``): runs chunks of jobs concurrently."""

    def __init__(self, name: str, cwd: str | None) -> None:
        import ray

        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # relative paths resolve as on the driver (shared folders)
        ctx = ray.get_runtime_context()
        self.name = name
        self.node_id = ctx.get_node_id()
        self.actor_id = ctx.get_actor_id() or ""
        attrs = {names.WORKER_ID: self.actor_id, names.WORKER_NAME: name,
                 names.WORKER_NODE: self.node_id}  # fmt: skip
        # Lines a stage logs here reach the driver through Ray: set up like the CLI's, with
        # secrets redacted and scrubbed (CRUCIBLE_WORKER_LOG_JSON=1, CRUCIBLE_WORKER_LOG_LEVEL).
        from crucible import logging as crucible_logging

        crucible_logging.configure(
            json=os.environ.get("CRUCIBLE_WORKER_LOG_JSON") == "1",
            level=os.environ.get("CRUCIBLE_WORKER_LOG_LEVEL", "info"),
        )
        self._handle: Any = None
        if os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower() not in ("", "none"):
            from crucible.telemetry.setup import configure

            self._handle = configure(offload=False)
            self._handle.tracer_provider.add_span_processor(WorkerAttributes(attrs))
        self._stores: dict[tuple[str, str | None], Any] = {}
        self._batches: dict[str, _Batch] = {}
        self._cancelled: set[str] = set()

    def info(self) -> dict[str, Any]:
        """Who this actor is: name, Ray node and actor ids, process id."""
        return {"name": self.name, "node_id": self.node_id, "actor_id": self.actor_id,
                "pid": os.getpid(), "traced": self._handle is not None}  # fmt: skip

    def _store(self, url: str, journal_dir: str | None) -> Any:
        key = (url, journal_dir)
        if key not in self._stores:
            from crucible.store import RunStore

            self._stores[key] = RunStore(url, journal_dir=journal_dir)
        return self._stores[key]

    def _batch(self, spec: BatchSpec, slots: int) -> _Batch:
        found = self._batches.get(spec.batch_id)
        if found is not None:
            return found
        kwargs = worker_kwargs(spec.run_kwargs)
        store = None
        if spec.store_url is not None:
            store = kwargs["store"] = self._store(spec.store_url, spec.journal_dir)
        if self._handle is not None:
            kwargs["tracer_provider"] = self._handle.tracer_provider
            kwargs["meter_provider"] = self._handle.meter_provider
        registry = kwargs["registry"] = worker_registry(spec.stages)
        batch_parent = parent_context(dict(spec.carrier))
        assert batch_parent is not None
        links: list[Link] = []
        if not spec.as_children:
            from opentelemetry import trace

            link_to = trace.get_current_span(batch_parent).get_span_context()
            links = [Link(link_to, {names.BATCH_ID: spec.batch_id})]
        batch = _Batch(
            spec, registry, kwargs,
            batch_parent if spec.as_children else otel_context.Context(), links,
            Slots(slots),
            Observers(() if store is None else (store.observer,)), set(),
            cancelled=spec.batch_id in self._cancelled,
        )  # fmt: skip
        self._batches[spec.batch_id] = batch
        return batch

    async def run_chunk(self, spec: BatchSpec, slots: int, jobs: list[RunJob]) -> list[WireOutcome]:
        """Run ``jobs`` (at most ``slots`` of this batch at once here); their outcomes."""
        batch = self._batch(spec, slots)
        results: list[RunOutcome] = []
        scope = anyio.CancelScope()
        batch.scopes.add(scope)
        if batch.cancelled:
            scope.cancel()
        try:
            with scope:
                async with anyio.create_task_group() as tg:
                    for job in jobs:
                        tg.start_soon(partial(
                            run_job, job, limiter=batch.limiter, batch_id=spec.batch_id,
                            parent=batch.parent, links=batch.links, run_kwargs=batch.run_kwargs,
                            observers=(), watchers=batch.watchers, started=_ignore,
                            finished=results.append,
                        ))  # fmt: skip
        finally:
            batch.scopes.discard(scope)
        keep = spec.return_contexts
        return [to_wire(o, keep_context=keep) for o in results]

    def cancel(self, batch_id: str) -> int:
        """Cancel every run of ``batch_id`` here (also chunks that arrive later)."""
        self._cancelled.add(batch_id)
        batch = self._batches.get(batch_id)
        if batch is None:
            return 0
        batch.cancelled = True
        for scope in batch.scopes:
            scope.cancel()
        return len(batch.scopes)

    async def end_batch(self, batch_id: str) -> None:
        """Forget the batch and flush its spans and store records."""
        self._batches.pop(batch_id, None)
        self._cancelled.discard(batch_id)
        for store in self._stores.values():
            await store.flush()
        if self._handle is not None:
            await anyio.to_thread.run_sync(self._handle.tracer_provider.force_flush, 10_000)

    async def close(self) -> None:
        """Close the stores and shut telemetry down (before the actor is killed)."""
        for store in self._stores.values():
            await store.close()
        self._stores.clear()
        if self._handle is not None:
            await anyio.to_thread.run_sync(self._handle.shutdown)


def _ignore(index: int) -> None:
    return None
