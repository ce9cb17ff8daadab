"""Engine overhead per stage against two span floors, all measured in one process and one run.

Cases (each traced case has its own SDK TracerProvider with a BatchSpanProcessor into a
discarding exporter; floors and crucible use the same processor and exporter):

- ``bare_loop``: a bare asyncio loop awaiting 5 trivial steps (no spans).
- ``floor_bare``: hand-written SDK spans with no attributes: a run span and one span per step,
  each opened with ``start_as_current_span`` (so code in a step could nest spans under it).
- ``floor_attrs``: the same spans with the names and attributes crucible sets.
- ``crucible``: ``crucible.run`` of a 5-stage experiment on its own SDK provider.
- ``untraced``: ``crucible.run`` with nothing exported (the private export-free provider).
- ``crucible_nowatch_c64``: ``crucible`` at 64 concurrent with the blocked-loop watchdog off
  (``CRUCIBLE_BLOCK_WARN_S=0``): what the watchdog, on by default, costs.

Each runs sequentially and with 64 runs in flight (``*_c64``). Every repeat runs all cases back
to back, the order reversed on odd repeats, so drift of a shared machine hits them alike; the
ratios are the median of the per-repeat (paired) ratios. Targets: crucible / floor_bare <= 1.3
(sequential and at 64 concurrent), untraced / floor_bare <= 0.8.

Run: python benchmarks/engine_overhead.py [--runs 2000] [--repeats 9]
     python benchmarks/engine_overhead.py --only crucible --repeats 1   # e.g. under callgrind
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
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
CONCURRENCY = 64
Go = Callable[[int], Coroutine[Any, Any, None]]


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


def concurrently(one: Callable[[int], Coroutine[Any, Any, None]]) -> Go:
    """``runs`` calls of ``one(run_number)`` with CONCURRENCY of them in flight."""

    async def go(runs: int) -> None:
        counter = iter(range(runs))

        async def worker() -> None:
            for r in counter:
                await one(r)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    return go


def sequentially(one: Callable[[int], Coroutine[Any, Any, None]]) -> Go:
    async def go(runs: int) -> None:
        for r in range(runs):
            await one(r)

    return go


async def bare_run(_r: int) -> None:
    for _ in range(STAGES):
        await trivial()


def floor_bare(tp: TracerProvider) -> Callable[[int], Coroutine[Any, Any, None]]:
    tracer = tp.get_tracer("floor")

    async def one(_r: int) -> None:
        with tracer.start_as_current_span("RUN bench"):
            for _ in range(STAGES):
                with tracer.start_as_current_span("stage step"):
                    await trivial()

    return one


def floor_attrs(tp: TracerProvider) -> Callable[[int], Coroutine[Any, Any, None]]:
    """The spans crucible makes, by hand: same names, kinds and attributes."""
    from opentelemetry.trace import SpanKind

    tracer = tp.get_tracer("floor")

    async def one(r: int) -> None:
        attrs: dict[str, Any] = {"cicd.pipeline.name": "bench", "cicd.pipeline.run.id": str(r),
                                 "crucible.stage.count": STAGES}  # fmt: skip
        with tracer.start_as_current_span(
            "RUN bench", kind=SpanKind.SERVER, attributes=attrs
        ) as rs:
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
            rs.set_attribute("cicd.pipeline.result", "success")

    return one


def crucible_run(tp: TracerProvider | None) -> Callable[[int], Coroutine[Any, Any, None]]:
    registry = Registry([step])
    exp = Experiment(id="bench", pipeline=[StageDef(name="step") for _ in range(STAGES)])

    async def one(_r: int) -> None:
        await run(exp, registry=registry, tracer_provider=tp)

    return one


def without_watchdog(go: Go) -> Go:
    """``go`` with the blocked-loop watchdog off (``CRUCIBLE_BLOCK_WARN_S=0``, read per run)."""

    async def off(runs: int) -> None:
        before = os.environ.get("CRUCIBLE_BLOCK_WARN_S")
        os.environ["CRUCIBLE_BLOCK_WARN_S"] = "0"
        try:
            await go(runs)
        finally:
            if before is None:
                del os.environ["CRUCIBLE_BLOCK_WARN_S"]
            else:
                os.environ["CRUCIBLE_BLOCK_WARN_S"] = before

    return off


def measure(cases: dict[str, Go], runs: int, repeats: int) -> dict[str, list[float]]:
    """µs per stage for every case and repeat; odd repeats run the cases in reverse order."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        asyncio.run(fn(64))  # warm up
    for repeat in range(repeats):
        order = list(cases.items())
        for name, fn in order if repeat % 2 == 0 else reversed(order):
            gc.collect()
            t0 = time.perf_counter()
            asyncio.run(fn(runs))
            samples[name].append((time.perf_counter() - t0) / (runs * STAGES) * 1e6)
    return samples


RATIOS = {  # name: (numerator, denominator, target or None)
    "crucible/floor_bare": ("crucible", "floor_bare", 1.3),
    "crucible/floor_attrs": ("crucible", "floor_attrs", None),
    "crucible_c64/floor_bare_c64": ("crucible_c64", "floor_bare_c64", 1.3),
    "crucible_c64/floor_attrs_c64": ("crucible_c64", "floor_attrs_c64", None),
    "crucible_nowatch_c64/floor_bare_c64": ("crucible_nowatch_c64", "floor_bare_c64", None),
    "untraced/floor_bare": ("untraced", "floor_bare", 0.8),
    "untraced_c64/floor_bare_c64": ("untraced_c64", "floor_bare_c64", 0.8),
    "floor_attrs/floor_bare": ("floor_attrs", "floor_bare", None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--only", help="run just this case (no ratios), e.g. under a profiler")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    exporters: dict[str, tuple[TracerProvider, CountingExporter]] = {}

    def traced(name: str, make: Callable[[TracerProvider], Any]) -> Any:
        tp, _ = exporters[name] = provider()
        return make(tp)

    cases: dict[str, Go] = {
        "bare_loop": sequentially(bare_run),
        "floor_bare": sequentially(traced("floor_bare", floor_bare)),
        "floor_attrs": sequentially(traced("floor_attrs", floor_attrs)),
        "crucible": sequentially(traced("crucible", crucible_run)),
        "untraced": sequentially(crucible_run(None)),
        "floor_bare_c64": concurrently(traced("floor_bare_c64", floor_bare)),
        "floor_attrs_c64": concurrently(traced("floor_attrs_c64", floor_attrs)),
        "crucible_c64": concurrently(traced("crucible_c64", crucible_run)),
        "crucible_nowatch_c64": without_watchdog(
            concurrently(traced("crucible_nowatch_c64", crucible_run))
        ),
        "untraced_c64": concurrently(crucible_run(None)),
    }
    if args.only:
        cases = {args.only: cases[args.only]}
    samples = measure(cases, args.runs, args.repeats)
    for tp, _ in exporters.values():
        tp.shutdown()
    meta = {"runs": args.runs, "stages": STAGES, "repeats": args.repeats,
            "processor": "BatchSpanProcessor -> discarding exporter"}  # fmt: skip
    for name, values in samples.items():
        line: dict[str, Any] = {"case": name, "us_per_stage": round(statistics.median(values), 2)}
        if name in exporters and name in cases:
            expected = (args.runs * args.repeats + 64) * (STAGES + 1)
            line.update(spans_exported=exporters[name][1].count, spans_expected=expected)
        print(json.dumps({**line, **meta}))
    if args.only:
        return
    for label, (num, den, target) in RATIOS.items():
        paired = [n / d for n, d in zip(samples[num], samples[den], strict=True)]
        out: dict[str, Any] = {
            "ratio": label,
            "median_paired": round(statistics.median(paired), 3),
            "paired": [round(r, 3) for r in paired],
        }
        if target is not None:
            out.update(target=target, within_target=statistics.median(paired) <= target)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
