"""Per-span cost of the OTLP offload path, on the spans real pipeline runs produce.

(a) ``offload.flatten``, which the span processor runs as each span ends; (b) ``otlp_wire``
writing the OTLP/protobuf request bytes for batches of flattened spans (what the child does);
(c) OpenTelemetry's own encoder building and serialising the same request. Prints JSON lines
(median µs per span over --repeats) and the median of the per-repeat ratios c/b (the cases
take turns in every repeat, so drift of this shared machine hits them alike). Spans come from
--runs runs of a 5-stage experiment recorded in memory: the engine's names and attributes.

Run: python benchmarks/span_encoding.py [--runs 1000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crucible import Context, Experiment, Registry, StageDef, run, stage
from crucible.telemetry.offload import flatten
from crucible.telemetry.otlp_wire import encode_request

STAGES = 5
BATCH = 512  # the export batch size configure() uses


@stage("step", description="A trivial step", register=False)
async def step(ctx: Context) -> Context:
    return ctx.put_metric("seen", True)


async def record(runs: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    registry = Registry([step])
    experiment = Experiment(id="encode", pipeline=[StageDef(name="step")] * STAGES)
    for _ in range(runs):
        await run(experiment, registry=registry, tracer_provider=provider)
    return list(memory.get_finished_spans())


def batches(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def per_span_us(work: Callable[[], object], spans: int) -> float:
    gc.collect()
    gc.disable()  # as timeit does: time the encoding, not collections of the recorded spans
    try:
        t0 = time.perf_counter()
        work()
        return (time.perf_counter() - t0) / spans * 1e6
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    spans = asyncio.run(record(args.runs))
    flat = [flatten(s) for s in spans]
    cases: dict[str, Callable[[], object]] = {
        "a_flatten": lambda: [flatten(s) for s in spans],
        "b_otlp_wire": lambda: [encode_request(b) for b in batches(flat)],
        "c_opentelemetry_encoder": lambda: [
            encode_spans(b).SerializeToString() for b in batches(spans)
        ],
    }
    samples: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(args.repeats):
        for case, work in cases.items():
            samples[case].append(per_span_us(work, len(spans)))
    for case, values in samples.items():
        us = round(statistics.median(values), 3)
        print(json.dumps({"case": case, "spans": len(spans), "us_per_span": us}))
    pairs = zip(samples["c_opentelemetry_encoder"], samples["b_otlp_wire"], strict=True)
    ratio = statistics.median(c / b for c, b in pairs)
    print(json.dumps({"paired_ratio_c_over_b": round(ratio, 2)}))


if __name__ == "__main__":
    main()
