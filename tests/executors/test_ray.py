"""run_batch on a real two-node Ray cluster: outcomes, spans over OTLP, store rows, failures."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import crucible
from crucible.errors import StageFailed
from crucible.executors import WorkerLost
from crucible.executors.shipping import NotShippable
from crucible.files import FileAccess
from crucible.status import RunStatus
from crucible.store import RunStore
from crucible.telemetry import conventions as names
from crucible.testing.otlp import OtlpHttpReceiver, ReceivedSpan
from tests.store.conftest import _pg_admin, run_async

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@crucible.stage("ray_square", description="Square assigns n into metric square.")
async def ray_square(ctx: crucible.Context) -> crucible.Context:
    n = ctx.assigns["n"]
    await asyncio.sleep(0.005)
    return ctx.put_metric("square", n * n).add_output({"n": n}).assign(seen=n)


@crucible.stage("ray_pid", description="Record the worker's process id.")
async def ray_pid(ctx: crucible.Context) -> crucible.Context:
    return ctx.put_metric("pid", os.getpid())


@crucible.stage("ray_sleep", description="Sleep assigns seconds.")
async def ray_sleep(ctx: crucible.Context) -> crucible.Context:
    await asyncio.sleep(ctx.assigns.get("seconds", 0.2))
    return ctx.put_metric("slept", True)


@crucible.stage("ray_fail_odd", description="Fail for odd n.")
async def ray_fail_odd(ctx: crucible.Context) -> crucible.Context:
    if ctx.assigns["n"] % 2:
        raise ValueError(f"odd n={ctx.assigns['n']}")
    return ctx.put_metric("even", True)


@crucible.stage("ray_logs_secret", description="Log a line holding the assigned api_key.")
async def ray_logs_secret(ctx: crucible.Context) -> crucible.Context:
    key = ctx.assigns["api_key"]
    structlog.get_logger("ray-test").warning(f"marker-{ctx.assigns['n']} token {key}")
    return ctx


class _Unshippable:
    """Its pickling fails with an error that quotes a secret."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self) -> Any:
        raise TypeError(f"cannot ship a client holding {self.key}")


@crucible.stage("ray_unshippable_output", description="Outputs a value that cannot be pickled.")
async def ray_unshippable_output(ctx: crucible.Context) -> crucible.Context:
    return ctx.add_output(_Unshippable(ctx.assigns["api_key"]))


_LOCK = threading.Lock()


@crucible.stage("ray_holds_lock", description="Closes over a lock: cannot be pickled.")
async def ray_holds_lock(ctx: crucible.Context) -> crucible.Context:
    with _LOCK:
        return ctx


def _items(n: int, pipeline: list[str], **assigns: Any) -> list[crucible.BatchItem]:
    exp = {"id": "ray-exp", "pipeline": [{"name": s} for s in pipeline]}
    return [crucible.BatchItem(exp, assigns={"n": i, **assigns}) for i in range(n)]


def _driver_provider(receiver: OtlpHttpReceiver) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": "crucible-ray-driver"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.traces_endpoint)))
    return tp


def _spans_of(receiver: OtlpHttpReceiver, trace_ids: set[str], n: int) -> list[ReceivedSpan]:
    """Wait (bounded) until ``n`` spans of these traces arrived; return them."""
    for _ in range(200):
        found = [s for s in receiver.spans() if s.trace_id in trace_ids]
        if len(found) >= n:
            return found
        threading.Event().wait(0.05)
    return [s for s in receiver.spans() if s.trace_id in trace_ids]


async def test_batch_spreads_over_both_nodes_with_one_trace_story(
    ray_executor: Any, receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    workers = await ray_executor.workers()
    assert len({w["node_id"] for w in workers}) == 2, workers  # one actor per node
    provider = _driver_provider(receiver)
    n = 40
    async with RunStore(tmp_path / "runs.db") as store:
        outcomes = await crucible.run_batch(
            _items(n, ["ray_square", "ray_pid"]), executor=ray_executor, store=store,
            max_concurrency=8, name="sweep", tracer_provider=provider, batch_id="spread",
        )  # fmt: skip
        assert [o.index for o in outcomes] == list(range(n))
        assert all(o.status is RunStatus.COMPLETED for o in outcomes), outcomes
        assert [o.metrics["square"] for o in outcomes] == [i * i for i in range(n)]
        for i, o in enumerate(outcomes):
            assert o.context is not None and o.context.assigns["seen"] == i
            assert list(o.context.outputs) == [{"n": i}]
            assert [r.stage for r in o.context.trace.spans] == ["ray_square", "ray_pid"]
        pids = {o.metrics["pid"] for o in outcomes}
        assert pids == {w["pid"] for w in workers}  # both actors ran runs
        rows = await store.list_runs(limit=1000, batch_id="spread")
        assert sorted(r.run_id for r in rows) == sorted(o.run_id for o in outcomes)
        assert {r.status for r in rows} == {"completed"}
        for row in rows[:5]:
            full = await store.get_run(row.run_id)
            assert full is not None and [a.stage for a in full.attempts] == [
                "ray_square",
                "ray_pid",
            ]
    trace_ids = {o.trace_id for o in outcomes}
    assert len(trace_ids) == 1  # every run is a child of the batch span
    spans = _spans_of(receiver, trace_ids, 1 + n * 3)
    batch = [s for s in spans if s.name == "BATCH sweep"]
    assert len(batch) == 1 and batch[0].attributes[names.BATCH_EXECUTOR] == "ray"
    runs = [s for s in spans if s.name.startswith(names.RUN_SPAN_PREFIX)]
    stages = [s for s in spans if s.parent_span_id in {r.span_id for r in runs}]
    assert len(runs) == n and len(stages) == 2 * n and len(spans) == 1 + 3 * n
    assert {r.parent_span_id for r in runs} == {batch[0].span_id}
    by_actor = {w["actor_id"]: w for w in workers}
    for span in runs + stages:
        actor = by_actor[span.attributes[names.WORKER_ID]]
        assert span.attributes[names.WORKER_NAME] == actor["name"]
        assert span.attributes[names.WORKER_NODE] == actor["node_id"]
        assert span.resource_attributes["service.name"] == "crucible-ray-worker"
    assert {r.attributes[names.PIPELINE_RUN_ID] for r in runs} == {o.run_id for o in outcomes}


async def test_beyond_trace_children_runs_link_to_the_batch(
    ray_executor: Any, receiver: OtlpHttpReceiver
) -> None:
    provider = _driver_provider(receiver)
    outcomes = await crucible.run_batch(
        _items(6, ["ray_square"]), executor=ray_executor, trace_children=3,
        tracer_provider=provider, name="linked",
    )  # fmt: skip
    assert all(o.ok for o in outcomes)
    trace_ids = {o.trace_id for o in outcomes}
    assert len(trace_ids) == 6  # each run starts its own trace
    batch = [s for s in receiver.wait_for_spans(1) if s.name == "BATCH linked"]
    for _ in range(100):
        batch = [s for s in receiver.spans() if s.name == "BATCH linked"]
        if batch:
            break
        await anyio.sleep(0.05)
    runs = [s for s in _spans_of(receiver, trace_ids, 12) if s.parent_span_id is None]
    assert len(runs) == 6
    for run in runs:
        assert [(link.trace_id, link.span_id) for link in run.links] == [
            (batch[0].trace_id, batch[0].span_id)
        ]


async def test_failures_come_back_whole(ray_executor: Any) -> None:
    outcomes = await crucible.run_batch(_items(4, ["ray_square", "ray_fail_odd"]),
                                        executor=ray_executor)  # fmt: skip
    assert [o.status for o in outcomes] == [
        RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.COMPLETED, RunStatus.FAILED
    ]  # fmt: skip
    failed = outcomes[1]
    assert isinstance(failed.error, StageFailed) and failed.error.stage == "ray_fail_odd"
    assert isinstance(failed.error.cause, ValueError) and "odd n=1" in str(failed.error.cause)
    assert failed.result == "failure"
    assert failed.context is not None and failed.context.get_metric("square") == 1


async def test_return_contexts_false_keeps_status_ids_and_metrics(ray_cluster: Any) -> None:
    from crucible.executors import RayExecutor

    async with RayExecutor(actors=1, num_cpus=0, return_contexts=False) as ex:
        outcomes = await crucible.run_batch(_items(5, ["ray_square"]), executor=ex)
    assert all(o.ok and o.context is None and o.trace_id for o in outcomes)
    assert [o.metrics for o in outcomes] == [{"square": i * i} for i in range(5)]


async def test_plugin_stages_resolve_on_workers_with_the_callers_file_access(
    ray_executor: Any, tmp_path: Path
) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('{"input": "a", "expected": "b"}\n{"input": "c", "expected": "d"}\n')
    exp = {
        "id": "plugin",
        "pipeline": [{"name": "load_examples", "options": {"path": str(data), "format": "jsonl"}}],
    }
    access = FileAccess.default(allow_read=[tmp_path])
    [ok] = await crucible.run_batch([exp], executor=ray_executor, file_access=access)
    assert ok.ok, ok.error
    assert ok.context is not None and len(ok.context.assigns["examples"]) == 2
    [refused] = await crucible.run_batch([exp], executor=ray_executor)
    assert refused.status is RunStatus.FAILED and "outside" in str(refused.error)


async def test_unshippable_stage_fails_preflight_naming_it(
    ray_executor: Any, tmp_path: Path
) -> None:
    async with RunStore(tmp_path / "runs.db") as store:
        with pytest.raises(NotShippable, match="ray_holds_lock"):
            await crucible.run_batch(_items(3, ["ray_square", "ray_holds_lock"]),
                                     executor=ray_executor, store=store)  # fmt: skip
        assert await store.count_runs() == 0


async def test_actors_that_cannot_start_are_a_clear_error(ray_cluster: Any) -> None:
    from crucible.errors import CrucibleError
    from crucible.executors import RayExecutor

    # On a cluster (an address given) actors that cannot be placed wait up to start_timeout_s.
    ex = RayExecutor(ray_cluster.address, actors=1, num_cpus=64, start_timeout_s=2)
    with anyio.fail_after(25):  # not the 30 s a close() the pending actor never answers takes
        with pytest.raises(CrucibleError, match=r"did not start 1 actors within 2 s.*num_cpus=64"):
            await crucible.run_batch(_items(2, ["ray_square"]), executor=ex)
    assert ex._pool == []  # the pending actor was removed


@pytest.mark.postgres
async def test_killed_worker_loses_no_run(ray_cluster: Any, pg_database: str) -> None:
    from crucible.executors import RayExecutor

    run_async(lambda: _pg_admin("DROP SCHEMA public CASCADE; CREATE SCHEMA public",
                                pg_database.rsplit("/", 1)[1]))  # fmt: skip
    n = 24
    async with RunStore(pg_database) as store, RayExecutor(actors=2, num_cpus=0) as ex:
        victim = (await ex.workers())[0]
        batch = asyncio.ensure_future(crucible.run_batch(
            _items(n, ["ray_sleep", "ray_pid"], seconds=0.3), executor=ex, store=store,
            max_concurrency=4, batch_id="killed-worker",
        ))  # fmt: skip
        for _ in range(300):  # until the victim has runs in flight
            rows = await store.list_runs(limit=100, batch_id="killed-worker", status="running")
            if sum(1 for r in rows if r.owner_pid == victim["pid"]) >= 1:
                break
            await anyio.sleep(0.02)
        os.kill(victim["pid"], signal.SIGKILL)
        outcomes = await batch
        assert [o.index for o in outcomes] == list(range(n))
        lost = [o for o in outcomes if not o.ok]
        assert lost, "the killed actor had runs in flight"
        for o in lost:
            assert o.status is RunStatus.FAILED and isinstance(o.error, WorkerLost)
            assert o.result == "error"
        rows = await store.list_runs(limit=100, batch_id="killed-worker")
        assert sorted(r.run_id for r in rows) == sorted(o.run_id for o in outcomes)
        stored = {r.run_id: r.status for r in rows}
        assert {o.run_id: str(o.status) for o in outcomes} == stored


async def test_cancelling_the_driver_stores_every_run_cancelled(
    ray_executor: Any, tmp_path: Path
) -> None:
    n = 30
    async with RunStore(tmp_path / "runs.db") as store:
        with anyio.move_on_after(1.5):
            await crucible.run_batch(
                _items(n, ["ray_sleep"], seconds=0.4), executor=ray_executor, store=store,
                max_concurrency=4, batch_id="cancelled-batch",
            )  # fmt: skip
        rows = await store.list_runs(limit=100, batch_id="cancelled-batch")
        statuses = [r.status for r in rows]
        assert len(rows) == n, statuses
        assert "running" not in statuses
        assert statuses.count("cancelled") >= n - 16  # at most a few finished in 1.5 s
        assert set(statuses) <= {"completed", "cancelled"}


async def test_worker_log_lines_redact_and_scrub_secrets(ray_executor: Any) -> None:
    import ray

    secret = "sk-ray-worker-secret-99"
    items = [crucible.BatchItem({"id": "logs", "pipeline": [{"name": "ray_logs_secret"}]},
                                assigns={"n": 4242, "api_key": secret})]  # fmt: skip
    [outcome] = await crucible.run_batch(items, executor=ray_executor)
    assert outcome.ok, outcome.error
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    text = ""
    for _ in range(200):  # Ray writes the worker's stderr to its log files (and to the driver)
        text = "".join(p.read_text(errors="replace") for p in logs.glob("worker-*"))
        if "marker-4242" in text:
            break
        await anyio.sleep(0.05)
    assert "marker-4242 token [REDACTED]" in text
    assert secret not in text


async def test_a_remote_error_quoting_a_secret_is_scrubbed_everywhere(
    ray_executor: Any, tmp_path: Path
) -> None:
    secret = "sk-ray-unshippable-secret-77"
    items = [crucible.BatchItem({"id": "ship", "pipeline": [{"name": "ray_unshippable_output"}]},
                                assigns={"n": 1, "api_key": secret})]  # fmt: skip
    async with RunStore(tmp_path / "runs.db") as store:
        [outcome] = await crucible.run_batch(items, executor=ray_executor, store=store)
        info = await store.get_run(outcome.run_id)
    assert isinstance(outcome.error, WorkerLost)
    assert "cannot ship a client holding [REDACTED]" in str(outcome.error)
    assert secret not in str(outcome.error)
    assert info is not None and info.status == "failed"
    assert info.failure_message is not None and secret not in info.failure_message
    assert "[REDACTED]" in info.failure_message
    raw = b"".join([await p.read_bytes() async for p in anyio.Path(tmp_path).glob("runs.db*")])
    assert secret.encode() not in raw


async def test_driver_observers_see_the_batch_and_are_told_runs_happen_elsewhere(
    ray_executor: Any,
) -> None:
    from structlog.testing import capture_logs

    from crucible.observers import BatchEnd, RunEnd, RunObserver

    class Watcher(RunObserver):
        def __init__(self) -> None:
            self.ends: list[BatchEnd] = []
            self.runs: list[RunEnd] = []

        def on_run_end(self, *, run: RunEnd) -> None:
            self.runs.append(run)

        def on_batch_end(self, *, batch: BatchEnd) -> None:
            self.ends.append(batch)

    watcher = Watcher()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings
    with capture_logs() as logs:
        outcomes = await crucible.run_batch(_items(3, ["ray_square"]), executor=ray_executor,
                                            observers=[watcher])  # fmt: skip
    assert all(o.ok for o in outcomes) and watcher.runs == []
    [end] = watcher.ends
    assert [o.run_id for o in end.outcomes] == [o.run_id for o in outcomes]
    assert any("per-run hooks do not run on Ray workers" in e["event"] for e in logs)


async def test_too_few_cpus_for_the_actors_is_an_error_at_once(ray_cluster: Any) -> None:
    from crucible.errors import CrucibleError
    from crucible.executors import RayExecutor

    ex = RayExecutor(actors=3, num_cpus=2)  # the session's cluster has 4 CPUs in all
    with pytest.raises(CrucibleError, match=r"3 Ray actors .* need 6 CPUs; .* has 4"):
        await ex.workers()  # refused before any actor is asked for: no waiting
    assert ex._pool == []
