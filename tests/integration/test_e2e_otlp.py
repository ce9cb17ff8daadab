"""End to end: crucible.run -> real OTLP exporters -> a receiver on 127.0.0.1 (and via rotel)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crucible import Context, Experiment, Registry, StageDef, StageFailed, run, stage
from crucible.telemetry.jsonl import read_otlp_jsonl
from crucible.telemetry.setup import TelemetryHandle, configure
from crucible.testing.otlp import (
    OtlpGrpcReceiver,
    OtlpHttpReceiver,
    ReceivedSpan,
    RotelHop,
    rotel_available,
)

pytestmark = [pytest.mark.otlp]

SERVICE = "crucible-e2e"


@stage("load", description="Loads data", register=False)
async def load(ctx: Context, opts: dict[str, Any]) -> Context:
    return ctx.put_metric("rows", 3).record_event("loaded", rows=3)


@stage("explode", description="Fails", register=False)
async def explode(ctx: Context) -> Context:
    raise ValueError("bad row 7")


REG = Registry([load, explode])
EXP = Experiment(
    id="e2e",
    pipeline=[StageDef(name="load", options={"token": "t0p-secret"}), StageDef(name="explode")],
)


@pytest.fixture
def handle_factory() -> Iterator[Any]:
    handles: list[TelemetryHandle] = []

    def make(**kwargs: Any) -> TelemetryHandle:
        h = configure(SERVICE, set_global=False, export_timeout_s=2.0, **kwargs)
        handles.append(h)
        return h

    yield make
    for h in handles:
        h.shutdown(timeout_s=2.0)


async def run_and_flush(handle: TelemetryHandle) -> StageFailed:
    with pytest.raises(StageFailed) as info:
        await run(
            EXP,
            registry=REG,
            run_id="run-e2e",
            tracer_provider=handle.tracer_provider,
            meter_provider=handle.meter_provider,
        )
    report = handle.shutdown(timeout_s=5.0)
    assert report.completed and report.lost == 0, report
    return info.value


def check_tree(spans: list[ReceivedSpan], err: StageFailed) -> None:
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"RUN e2e", "stage load", "stage explode"}
    root, load_span, boom = by_name["RUN e2e"], by_name["stage load"], by_name["stage explode"]
    assert len({s.trace_id for s in spans}) == 1
    assert load_span.parent_span_id == root.span_id and boom.parent_span_id == root.span_id
    assert root.parent_span_id is None
    assert root.service_name == SERVICE
    assert root.attributes["cicd.pipeline.name"] == "e2e"
    assert root.attributes["cicd.pipeline.run.id"] == "run-e2e"
    assert root.attributes["cicd.pipeline.result"] == "failure"
    assert root.status_code == "ERROR"
    assert load_span.kind == "INTERNAL" and load_span.status_code == "UNSET"
    assert load_span.attributes["cicd.pipeline.task.run.result"] == "success"
    assert [e[0] for e in load_span.events] == ["loaded"]
    assert "t0p-secret" not in str(load_span.attributes)
    assert boom.status_code == "ERROR" and "bad row 7" in boom.status_message
    assert boom.attributes["error.type"] == "ValueError"
    exc = [e for e in boom.events if e[0] == "exception"]
    assert exc and exc[0][1]["exception.type"] == "ValueError"
    assert exc[0][1]["exception.message"] == "bad row 7"
    # ctx.trace on the error's context names the same ids that were exported.
    assert err.context is not None and err.context.trace is not None
    assert err.context.trace.trace_id == root.trace_id
    assert err.context.trace.span_id == root.span_id
    assert [r.span_id for r in err.context.trace.spans] == [load_span.span_id, boom.span_id]


async def test_otlp_http_exporter_to_receiver(handle_factory: Any) -> None:
    with OtlpHttpReceiver() as receiver:
        handle = handle_factory(
            exporter="otlp", endpoint=receiver.endpoint, protocol="http/protobuf"
        )
        err = await run_and_flush(handle)
        check_tree(receiver.wait_for_spans(3), err)


async def test_otlp_grpc_exporter_to_receiver(handle_factory: Any) -> None:
    with OtlpGrpcReceiver() as receiver:
        handle = handle_factory(exporter="otlp", endpoint=receiver.endpoint, protocol="grpc")
        err = await run_and_flush(handle)
        check_tree(receiver.wait_for_spans(3), err)


@pytest.mark.skipif(not rotel_available(), reason="rotel could not be installed")
async def test_through_rotel_collector_hop(handle_factory: Any) -> None:
    with OtlpHttpReceiver() as receiver, RotelHop(receiver, protocol="http") as hop:
        handle = handle_factory(exporter="otlp", endpoint=hop.grpc_endpoint, protocol="grpc")
        err = await run_and_flush(handle)
        check_tree(receiver.wait_for_spans(3, timeout=10.0), err)


async def test_file_exporter_writes_otlp_json_lines(handle_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    handle = handle_factory(exporter="file", file_path=path)
    err = await run_and_flush(handle)
    spans = read_otlp_jsonl(path)
    assert {s["name"] for s in spans} == {"RUN e2e", "stage load", "stage explode"}
    assert err.context is not None and err.context.trace is not None
    assert {s["trace_id"] for s in spans} == {err.context.trace.trace_id}
