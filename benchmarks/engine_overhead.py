"""Engine overhead per stage, all measured in one process and one run of this script.

(a) a bare asyncio loop awaiting 5 steps; (b) the same with a hand-written span per step under a
run span (the floor for traced pipelines); (c) crucible.run with an SDK provider and a
BatchSpanProcessor; (d) crucible.run with nothing exported (private fallback provider).
(b) and (c) export to the same discarding exporter and their spans carry the same names and
attributes (the CI/CD attributes crucible sets), so they differ only by the engine's own work.
Prints JSON lines (median µs per stage over --repeats), the ratio of the medians c/b, and the
median of the per-repeat ratios (c and b run back to back, so drift of this shared machine
cancels out; within_target uses it). Target: c/b <= 1.3.

Run: python benchmarks/engine_overhead.py [--runs 2000] [--repeats 9]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from bench_common import CountingExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from crucible import Context, Experiment, Registry, StageDef, run, stage

STAGES = 5


@stage("step", description="A trivial awaited step", register=False)
async def step(ctx: Context) -> Context:
    await asyncio.sleep(0)
    return ctx


async def trivial() -> None:
    await asyncio.sleep(0)


def provider() -> tuple[TracerProvider, CountingExporter]:
    exporter = CountingExporter()
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16))
    return tp, exporter


async def bare(runs: int) -> None:
    for _ in range(runs):
        for _ in range(STAGES):
            await trivial()


def hand_spans(tp: TracerProvider) -> Callable[[int], Coroutine[Any, Any, None]]:
    tracer = tp.get_tracer("floor")

    async def go(runs: int) -> None:
        for r in range(runs):
            attrs: dict[str, Any] = {"cicd.pipeline.name": "bench", "cicd.pipeline.run.id": str(r),
                     "crucible.stage.count": STAGES}  # fmt: skip
            with tracer.start_as_current_span("RUN bench", attributes=attrs) as run_span:
                for i in range(STAGES):
                    stage_attrs: dict[str, Any] = {
                        "cicd.pipeline.task.name": "step",
                        "crucible.stage.index": i,
                        "crucible.stage.option_keys": [],
                        "crucible.stage.options": "{}",
                        "crucible.stage.attempt": 1,
                    }
                    with tracer.start_as_current_span("stage step", attributes=stage_attrs) as sp:
                        await trivial()
                        sc = sp.get_span_context()
                        sp.set_attributes({"cicd.pipeline.task.run.id": f"{sc.span_id:016x}",
                                           "cicd.pipeline.task.run.result": "success"})  # fmt: skip
                run_span.set_attribute("cicd.pipeline.result", "success")

    return go


def engine(tp: TracerProvider | None) -> Callable[[int], Coroutine[Any, Any, None]]:
    registry = Registry([step])
    exp = Experiment(id="bench", pipeline=[StageDef(name="step") for _ in range(STAGES)])

    async def go(runs: int) -> None:
        for _ in range(runs):
            await run(exp, registry=registry, tracer_provider=tp)

    return go


def measure(
    cases: dict[str, Callable[[int], Coroutine[Any, Any, None]]], runs: int, repeats: int
) -> dict[str, list[float]]:
    """µs per stage for every case; cases interleave each repeat so drift hits them alike.

    Odd repeats run the cases in reverse order, so neither of a pair always goes first.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        asyncio.run(fn(50))  # warm up
    for repeat in range(repeats):
        order = list(cases.items())
        for name, fn in order if repeat % 2 == 0 else reversed(order):
            gc.collect()
            t0 = time.perf_counter()
            asyncio.run(fn(runs))
            samples[name].append((time.perf_counter() - t0) / (runs * STAGES) * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    tp_b, exp_b = provider()
    tp_c, exp_c = provider()
    samples = measure(
        {
            "a_bare_loop": bare,
            "b_hand_spans": hand_spans(tp_b),
            "c_crucible_sdk_batch": engine(tp_c),
            "d_crucible_no_export": engine(None),
        },
        args.runs,
        args.repeats,
    )
    results = {name: statistics.median(values) for name, values in samples.items()}
    tp_b.shutdown()
    tp_c.shutdown()
    for name, us in results.items():
        print(json.dumps({"case": name, "us_per_stage": round(us, 2), "runs": args.runs,
                          "stages": STAGES, "repeats": args.repeats}))  # fmt: skip
    expected = (args.runs * args.repeats + 50) * (STAGES + 1)
    pair_ratios = [
        c / b for c, b in zip(samples["c_crucible_sdk_batch"], samples["b_hand_spans"], strict=True)
    ]
    print(json.dumps({"spans_exported_b": exp_b.count, "spans_exported_c": exp_c.count,
                      "expected_each": expected}))  # fmt: skip
    ratio = results["c_crucible_sdk_batch"] / results["b_hand_spans"]
    paired = statistics.median(pair_ratios)
    print(
        json.dumps(
            {"ratio_c_over_b": round(ratio, 3), "median_paired_ratio": round(paired, 3),
             "paired_ratios": [round(r, 3) for r in pair_ratios],
             "target": 1.3, "within_target": paired <= 1.3}
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
