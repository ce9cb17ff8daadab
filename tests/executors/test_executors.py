"""The executor seam without a cluster: shares, forwarded settings, shipping, outcomes."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

import crucible
from crucible.errors import StageFailed
from crucible.executors import LocalExecutor, PreparedBatch, WorkerLost
from crucible.executors.ray_executor import _on_loopback, forwarded_env, shares
from crucible.registry import Registry, default_registry
from crucible.status import RunStatus


@crucible.stage("exec_unit_add", description="Add one to metric n.", register=False)
async def exec_unit_add(ctx: crucible.Context) -> crucible.Context:
    return ctx.put_metric("n", ctx.get_metric("n", 0) + 1)


def test_shares_split_concurrency_over_actors() -> None:
    assert shares(8, 2) == [4, 4]
    assert shares(7, 3) == [3, 2, 2]
    assert shares(2, 5) == [1, 1]  # never more actors than slots
    assert sum(shares(64, 3)) == 64


def test_forwarded_env_keeps_otel_and_drops_secret_named_crucible_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer x")  # needed to export
    monkeypatch.setenv("CRUCIBLE_ENGINE_SPANS", "api")
    monkeypatch.setenv("CRUCIBLE_SERVICE_TOKEN", "s3cret")
    monkeypatch.setenv("HOME_SECRET", "no")
    env = forwarded_env("otlp", {"OTEL_SERVICE_NAME": "w"})
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == "authorization=Bearer x"
    assert env["CRUCIBLE_ENGINE_SPANS"] == "api"
    assert env["OTEL_TRACES_EXPORTER"] == "otlp" and env["OTEL_SERVICE_NAME"] == "w"
    assert "CRUCIBLE_SERVICE_TOKEN" not in env and "HOME_SECRET" not in env


def test_loopback_addresses() -> None:
    assert _on_loopback(None) and _on_loopback("127.0.0.1:6379")
    assert _on_loopback("ray://localhost:10001")
    assert not _on_loopback("auto") and not _on_loopback("10.0.0.5:6379")


def test_script_stages_ship_by_value_and_plugins_by_name() -> None:
    pytest.importorskip("ray")
    from crucible.executors.shipping import ship_stages, worker_registry

    registry = Registry([exec_unit_add], discover=True)
    exp = crucible.Experiment.model_validate({"id": "e", "pipeline": [
        {"name": "exec_unit_add"}, {"name": "validate"}, {"name": "no_such_stage"}]})  # fmt: skip
    job = crucible.executors.RunJob(0, exp, "r")
    shipped = pickle.loads(ship_stages([job], registry))
    assert [s.name for s in shipped] == ["exec_unit_add"]  # validate is an entry point
    worker = worker_registry(ship_stages([job], registry))
    assert worker.get("exec_unit_add").call is not exec_unit_add  # a copy, by value
    assert worker.source("validate").kind == "entry point"


def test_an_unpicklable_stage_is_named() -> None:
    pytest.importorskip("ray")
    from crucible.executors.shipping import NotShippable, ship_stages

    lock = threading.Lock()

    async def holds(ctx: crucible.Context) -> crucible.Context:
        with lock:
            return ctx

    registry = Registry([crucible.stage("holds_lock", description="d", register=False)(holds)])
    exp = crucible.Experiment.model_validate({"id": "e", "pipeline": [{"name": "holds_lock"}]})
    with pytest.raises(NotShippable, match=r"stage 'holds_lock' \(.*holds\) cannot be shipped"):
        ship_stages([crucible.executors.RunJob(0, exp, "r")], registry)


async def test_outcomes_travel_back_and_unpicklable_errors_keep_type_and_text() -> None:
    pytest.importorskip("ray")
    from crucible.executors.shipping import RemoteError, from_wire, to_wire

    registry = Registry([exec_unit_add])
    ctx = await crucible.run({"id": "e", "pipeline": [{"name": "exec_unit_add"}]},
                             registry=registry)  # fmt: skip
    ok = crucible.RunOutcome(RunStatus.COMPLETED, ctx, None, "r1", ctx.trace.trace_id, 3, "e")
    back = from_wire(pickle.loads(pickle.dumps(to_wire(ok, keep_context=True))), "e")
    assert back == ok and back.metrics == {"n": 1}
    slim = from_wire(to_wire(ok, keep_context=False), "e")
    assert slim.context is None and slim.metrics == {"n": 1} and slim.trace_id == ok.trace_id

    class Local(Exception):
        def __init__(self) -> None:
            super().__init__("cannot pickle me", threading.Lock())

    failed = crucible.RunOutcome(RunStatus.FAILED, None, StageFailed("s", Local(), None), "r2",
                                 None)  # fmt: skip
    wire = to_wire(failed, keep_context=True)
    err = from_wire(wire, "e").error
    assert isinstance(err, RemoteError) and err.type_name == "StageFailed"
    assert "cannot pickle me" in str(err)
    assert pickle.loads(pickle.dumps(err)).type_name == "StageFailed"


class _Forgetful:
    """An executor that runs nothing and reports nothing."""

    async def execute(self, batch: PreparedBatch) -> None:
        return None


async def test_a_job_without_an_outcome_is_never_silently_missing() -> None:
    exp = {"id": "e", "pipeline": [{"name": "exec_unit_add"}]}
    outcomes = await crucible.run_batch([exp, exp], executor=_Forgetful())
    assert [o.index for o in outcomes] == [0, 1]
    assert all(o.status is RunStatus.FAILED and isinstance(o.error, WorkerLost) for o in outcomes)
    assert {o.result for o in outcomes} == {"error"}


async def test_local_executor_is_the_default_and_can_be_named() -> None:
    registry: Any = Registry([exec_unit_add])
    exp = {"id": "e", "pipeline": [{"name": "exec_unit_add"}]}
    named = await crucible.run_batch([exp], executor=LocalExecutor(), registry=registry)
    default = await crucible.run_batch([exp], registry=registry)
    assert named[0].metrics == default[0].metrics == {"n": 1}
    assert named[0].result == "success"
    assert "exec_unit_add" not in default_registry()
