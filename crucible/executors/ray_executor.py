"""RayExecutor: a batch's runs inside long-lived Ray async actors, handed out in chunks.

The driver keeps ``max_concurrency`` for the whole batch by giving each actor a share of it, and
keeps at most two chunks per actor in flight, so 100,000 runs never become 100,000 Ray objects.
A killed actor is replaced; its runs are looked up in the store: a run it never began is run
again elsewhere, one it left ``running`` is stored and returned ``failed`` (result ``error``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import structlog
from opentelemetry import trace

from crucible import scrub
from crucible.errors import CrucibleError
from crucible.executors.base import PreparedBatch, RunJob, RunOutcome, WorkerLost
from crucible.executors.local import never_started
from crucible.executors.ray_worker import BatchSpec, RunActor
from crucible.executors.shipping import from_wire, ship_stages, worker_kwargs
from crucible.observers import Observers
from crucible.redact import is_secret_key
from crucible.registry import default_registry
from crucible.status import RunStatus
from crucible.telemetry import conventions as names

_log = structlog.get_logger("crucible.executors.ray")
MAX_CHUNK = 256
LOST = "its Ray worker died while it ran"
_FINAL = {s.value for s in RunStatus} - {"running", "abandoned"}
_RUN_HOOKS = ("on_run_start", "on_attempt_start", "on_attempt_end", "on_checkpoint", "on_run_end")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CrucibleError(
            "RayExecutor needs Ray: pip install 'crucible-pipelines[ray]'"
        ) from None
    return ray


def forwarded_env(
    exporter: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The driver's OTEL_* and CRUCIBLE_* settings for the workers (never secret-named
    CRUCIBLE_* ones), then ``extra``; ``exporter`` sets OTEL_TRACES_EXPORTER."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("OTEL_", "CRUCIBLE_")) and (k.startswith("OTEL_") or
                                                        not is_secret_key(k))}  # fmt: skip
    env.update(extra or {})
    if exporter is not None:
        env["OTEL_TRACES_EXPORTER"] = exporter
    return env


def shares(total: int, parts: int) -> list[int]:
    """``total`` slots split over ``parts`` actors as evenly as possible (each at least 1)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class RayExecutor:
    """Runs batches on Ray: ``address`` None starts or joins a local instance, ``"auto"`` joins
    the running cluster, ``ray://host:port`` uses Ray Client.

    ``actors`` long-lived async actors (``num_cpus`` each, spread over the nodes) run the runs;
    ``chunk_size`` jobs travel per call (default: the actor's share of ``max_concurrency``).
    ``return_contexts=False`` keeps only status, ids and metrics of each run. The workers get
    the driver's OTEL_* settings, then ``env``; ``exporter`` sets their OTEL_TRACES_EXPORTER.
    ``retries`` is how often a run whose worker died before it began is run again;
    ``start_timeout_s`` how long the actors may take to start (then CrucibleError). Call
    ``shutdown()`` (or use ``async with``) to stop the actors.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        actors: int = 2,
        num_cpus: float = 1,
        chunk_size: int | None = None,
        return_contexts: bool = True,
        exporter: str | None = None,
        env: Mapping[str, str] | None = None,
        retries: int = 1,
        cancel_timeout_s: float = 30.0,
        start_timeout_s: float = 120.0,
        init_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if actors < 1:
            raise ValueError(f"actors must be at least 1, got {actors}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        if retries < 0 or cancel_timeout_s <= 0 or start_timeout_s <= 0:
            raise ValueError("retries must be >= 0, the timeouts positive")
        self.address = address
        self.actors = actors
        self.num_cpus = num_cpus
        self.chunk_size = chunk_size
        self.return_contexts = return_contexts
        self.exporter = exporter
        self.env = dict(env or {})
        self.retries = retries
        self.cancel_timeout_s = cancel_timeout_s
        self.start_timeout_s = start_timeout_s
        self._init_kwargs = dict(init_kwargs or {})
        self._pool: list[Any] = []
        self._made = 0

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, actors={self.actors})"

    async def __aenter__(self) -> RayExecutor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if _on_loopback(self.address):
                kwargs["_node_ip_address"] = "127.0.0.1"  # a local instance stays on loopback
            kwargs.update(self._init_kwargs)
            ray.init(address=self.address, **kwargs)
        return ray

    def _new_actor(self) -> Any:
        ray = self._ray
        name = f"crucible-worker-{self._made}"
        self._made += 1
        remote = ray.remote(RunActor).options(
            num_cpus=self.num_cpus, max_concurrency=10_000, max_restarts=0,
            scheduling_strategy="SPREAD",
            runtime_env={"env_vars": forwarded_env(self.exporter, self.env)},
        )  # fmt: skip
        return remote.remote(name, os.getcwd())

    async def workers(self) -> list[dict[str, Any]]:
        """Start the actors (if not yet) and say who they are (name, node, pid).

        Raises CrucibleError when they cannot all start within ``start_timeout_s`` (the cluster
        lacks the CPUs they ask for, or their processes fail to start).
        """
        self._ray = self._connect()
        if self.address is None and not self._pool:
            total = self._ray.cluster_resources().get("CPU", 0)
            if total < self.actors * self.num_cpus:  # a local instance never grows
                raise CrucibleError(
                    f"{self.actors} Ray actors with num_cpus={self.num_cpus:g} each need "
                    f"{self.actors * self.num_cpus:g} CPUs; this local Ray instance has "
                    f"{total:g}: lower actors= or num_cpus= (0 lets actors share CPUs); "
                    "nothing was run"
                )
        while len(self._pool) < self.actors:
            self._pool.append(self._new_actor())
        with anyio.move_on_after(self.start_timeout_s):
            return list(await _gather([a.info.remote() for a in self._pool]))
        free = self._ray.available_resources().get("CPU", 0)
        await self.shutdown(polite=False)  # one that never started would never answer close()
        raise CrucibleError(
            f"Ray did not start {self.actors} actors within {self.start_timeout_s:g} s: each "
            f"asks for num_cpus={self.num_cpus:g} and the cluster has {free:g} CPUs free; "
            "lower actors= or num_cpus=, or add nodes; nothing was run"
        )

    async def shutdown(self, *, polite: bool = True) -> None:
        """Close and stop the actors (the next batch starts new ones); ``polite=False`` stops
        them without asking them to close first."""
        pool, self._pool = self._pool, []
        if not pool:
            return
        if polite:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await _gather([a.close.remote() for a in pool], errors_ok=True)
        for actor in pool:
            self._ray.kill(actor)

    async def execute(self, batch: PreparedBatch) -> None:
        watching = Observers(batch.observers)
        if any(getattr(watching, h) for h in _RUN_HOOKS):
            _log.warning(
                "observers' per-run hooks do not run on Ray workers; on the driver they see "
                "on_batch_start and on_batch_end (with every outcome)",
                observers=[type(o).__name__ for o in batch.observers],
            )
        self._ray = await anyio.to_thread.run_sync(self._connect)
        run_kwargs = batch.run_kwargs
        registry = run_kwargs.get("registry") or default_registry()
        store = run_kwargs.get("store")
        spec = BatchSpec(
            batch_id=batch.batch_id, as_children=batch.as_children, carrier=dict(batch.carrier),
            stages=ship_stages(batch.jobs, registry), run_kwargs=worker_kwargs(run_kwargs),
            store_url=None if store is None else store.url_for_workers(),
            journal_dir=None if store is None else str(store.journal_dir),
            return_contexts=self.return_contexts,
        )  # fmt: skip
        await self.workers()
        await _Dispatch(self, batch, self._ray.put(spec), store).run()


class _Dispatch:
    """One batch on the actors: the job queue, the chunks in flight, the lost-worker rules."""

    def __init__(self, ex: RayExecutor, batch: PreparedBatch, spec_ref: Any, store: Any) -> None:
        self.ex, self.batch, self.spec_ref, self.store = ex, batch, spec_ref, store
        self.queue: deque[RunJob] = deque(batch.jobs)
        self.inflight: dict[int, tuple[Any, list[RunJob]]] = {}
        self.tries: dict[int, int] = {}
        self.done: set[int] = set()
        self.replacements = ex.actors
        self.span = trace.get_current_span(batch.parent)

    def finish(self, outcome: RunOutcome) -> None:
        if outcome.index not in self.done:
            self.done.add(outcome.index)
            self.batch.finished(outcome)

    async def run(self) -> None:
        self.span.set_attribute(names.BATCH_EXECUTOR, "ray")
        slots = shares(self.batch.max_concurrency, len(self.ex._pool))
        try:
            async with anyio.create_task_group() as tg:
                for actor, share in zip(self.ex._pool, slots, strict=False):
                    tg.start_soon(self.serve, tg, actor, share)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self.cancel_all()
            raise
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await _gather([a.end_batch.remote(self.batch.batch_id) for a in self.ex._pool],
                              errors_ok=True)  # fmt: skip
        for job in self.queue:  # every actor died and none could replace them
            await self.lost(job, "no Ray worker was left to run it")
        self.queue.clear()

    async def serve(self, tg: Any, actor: Any, share: int) -> None:
        """Feed ``actor`` chunks (two in flight) until the queue is empty or the actor dies."""
        size = min(self.ex.chunk_size or share, MAX_CHUNK)
        dead = anyio.Event()

        async def feed() -> None:
            while self.queue and not dead.is_set():
                chunk = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
                for job in chunk:
                    self.batch.started(job.index)
                ref = actor.run_chunk.remote(self.spec_ref, share, chunk)
                key = id(ref)
                self.inflight[key] = (ref, chunk)
                try:
                    wires = await ref
                except Exception as err:
                    self.inflight.pop(key, None)
                    if not _actor_died(self.ex._ray, err):
                        for job in chunk:
                            await self.lost(job, f"{type(err).__name__}: {err}", retry=False)
                        continue
                    dead.set()
                    await self.reclaim(chunk, err)
                    continue
                self.inflight.pop(key, None)
                for wire in wires:
                    self.finish(from_wire(wire, self.batch.jobs[wire.index].experiment.id))

        async with anyio.create_task_group() as mine:
            mine.start_soon(feed)
            mine.start_soon(feed)
        if dead.is_set() and self.queue and self.replacements > 0:
            self.replacements -= 1
            _log.warning("a Ray worker died; starting another", batch_id=self.batch.batch_id)
            fresh = self.ex._new_actor()
            with anyio.move_on_after(self.ex.start_timeout_s):
                await fresh.info.remote()
                self.ex._pool = [a for a in self.ex._pool if a is not actor] + [fresh]
                tg.start_soon(self.serve, tg, fresh, share)
                return
            self.ex._ray.kill(fresh)  # cannot start: the other actors take the rest
            self.ex._pool = [a for a in self.ex._pool if a is not actor]

    async def reclaim(self, chunk: Sequence[RunJob], err: BaseException) -> None:
        """Jobs of a dead actor: run again if never begun, else recorded failed (or as stored)."""
        for job in chunk:
            info = await self.store.get_run(job.run_id) if self.store is not None else None
            if info is not None and info.status in _FINAL:
                self.finish(RunOutcome(
                    RunStatus(info.status), None,
                    None if info.status == "completed" else WorkerLost(
                        info.failure_message or info.status),
                    job.run_id, info.trace_id, job.index, job.experiment.id,
                    info.duration_s or 0.0, info.metrics,
                ))  # fmt: skip
            elif (
                info is None
                and self.store is not None
                and self.tries.get(job.index, 0) < (self.ex.retries)
            ):
                self.tries[job.index] = self.tries.get(job.index, 0) + 1
                self.queue.appendleft(job)
            else:
                await self.lost(job, f"{LOST} ({type(err).__name__})", stored=info is not None)

    async def lost(
        self, job: RunJob, why: str, *, retry: bool = False, stored: bool = False
    ) -> None:
        """``job`` ends ``failed`` with a WorkerLost error, stored so, and noted on the span.

        ``why`` may quote a remote error, so it is scrubbed of the run's secrets first.
        """
        message = scrub.for_experiment(job.experiment, job.assigns).text(f"run {job.run_id}: {why}")
        self.span.add_event(names.EVENT_RUN_LOST, {names.PIPELINE_RUN_ID: job.run_id,
                                                    "exception.message": message})  # fmt: skip
        if self.store is not None:
            with anyio.CancelScope(shield=True):
                if not stored and await self.store.get_run(job.run_id) is None:
                    await self.store.start_run(job.experiment, job.run_id,
                                               batch_id=self.batch.batch_id)  # fmt: skip
                await self.store.finish_run(job.run_id, "failed", failure_message=message,
                                            error_type=WorkerLost.__qualname__)  # fmt: skip
        self.finish(RunOutcome(RunStatus.FAILED, None, WorkerLost(message), job.run_id, None,
                               job.index, job.experiment.id))  # fmt: skip

    async def cancel_all(self) -> None:
        """Cancel the remote runs, collect what they return, record the rest cancelled."""
        batch = self.batch
        await _gather([a.cancel.remote(batch.batch_id) for a in self.ex._pool], errors_ok=True)
        with anyio.move_on_after(self.ex.cancel_timeout_s):
            for ref, _chunk in list(self.inflight.values()):
                try:
                    wires = await ref
                except Exception:
                    continue
                for wire in wires:
                    self.finish(from_wire(wire, batch.jobs[wire.index].experiment.id))
        for ref, chunk in list(self.inflight.values()):
            for job in chunk:
                if job.index not in self.done:
                    self.finish(RunOutcome(RunStatus.CANCELLED, None, None, job.run_id, None,
                                           job.index, job.experiment.id))  # fmt: skip
            del ref
        for job in self.queue:
            self.finish(RunOutcome(RunStatus.CANCELLED, None, None, job.run_id, None, job.index,
                                   job.experiment.id))  # fmt: skip
            await never_started(batch.watchers, job, batch.batch_id)
        self.queue.clear()


def _on_loopback(address: str | None) -> bool:
    """Whether ``address`` is None (a local instance) or a cluster on 127.0.0.1/localhost."""
    if address is None:
        return True
    host = address.removeprefix("ray://").rpartition(":")[0] or address
    return host in ("localhost", "::1") or host.startswith("127.")


def _actor_died(ray: Any, err: BaseException) -> bool:
    errors = ray.exceptions
    kinds = tuple(
        getattr(errors, n)
        for n in ("RayActorError", "ActorDiedError", "ActorUnavailableError")
        if hasattr(errors, n)
    )
    return isinstance(err, kinds)


async def _gather(refs: Sequence[Any], *, errors_ok: bool = False) -> list[Any]:
    out: list[Any] = []
    for ref in refs:
        try:
            out.append(await ref)
        except Exception:
            if not errors_ok:
                raise
            out.append(None)
    return out
