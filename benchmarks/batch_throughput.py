"""Batch throughput: 10,000 runs x 5 stages at concurrency 256, traced vs untraced, one script.

Each case runs in its own subprocess (so peak RSS is per case) and prints one JSON line:
runs/s, µs per stage, peak RSS, and spans exported vs expected. Cases:
  untraced          nothing exported (the engine's private provider; ctx.trace still filled)
  traced_discard    your own SDK provider + BatchSpanProcessor into a counting exporter
  traced_otlp_http  crucible.telemetry.configure(exporter="otlp"), as the CLI and services use
                    it: OTLP/HTTP to a receiver in another process on 127.0.0.1
Every case runs --repeats times (order alternating); with --freeze also after ``gc.freeze()``
(measured: no clear effect). Then traced/untraced as the ratio of medians and as the median of
each repeat's own ratio (within_target uses that one; target >= 0.75), and a
tracemalloc measurement of the memory held per in-flight run (256 runs parked in a stage;
target < 20 KB).

Run: python benchmarks/batch_throughput.py [--runs 10000] [--concurrency 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import anyio
import structlog
from bench_common import CountingExporter, serve_sink
from opentelemetry.sdk.trace import TracerProvider

from crucible import Context, Experiment, Registry, StageDef, run_batch, stage
from crucible.telemetry.setup import configure

STAGES = 5


@stage("step", description="A trivial awaited step", register=False)
async def step(ctx: Context) -> Context:
    await anyio.lowlevel.checkpoint()
    return ctx


def experiment() -> Experiment:
    return Experiment(id="throughput", pipeline=[StageDef(name="step") for _ in range(STAGES)])


def run_case(
    case: str, runs: int, concurrency: int, endpoint: str | None, freeze: bool = False
) -> dict[str, Any]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    registry = Registry([step])
    exp = experiment()
    kwargs: dict[str, Any] = {}
    counter: CountingExporter | None = None
    handle = None
    if case == "traced_discard":
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        counter = CountingExporter()
        tp = TracerProvider()
        tp.add_span_processor(BatchSpanProcessor(counter, max_queue_size=1 << 17))
        kwargs["tracer_provider"] = tp
    elif case == "traced_otlp_http":
        handle = configure("bench", "otlp", endpoint=endpoint, set_global=False,
                           max_queue_size=1 << 17, export_timeout_s=10)  # fmt: skip
        kwargs["tracer_provider"] = handle.tracer_provider
    if freeze:  # the collector stops rescanning everything alive after start-up
        gc.collect()
        gc.freeze()
    t0 = time.perf_counter()
    outcomes = asyncio.run(run_batch([exp] * runs, max_concurrency=concurrency,
                                     registry=registry, **kwargs))  # fmt: skip
    elapsed = time.perf_counter() - t0
    expected = runs * (STAGES + 1) + 1
    exported: int | None = None
    if counter is not None:
        kwargs["tracer_provider"].shutdown()
        exported = counter.count
    if handle is not None:
        report = handle.shutdown(timeout_s=60)
        exported = report.exported
    return {
        "case": case,
        "gc_freeze": freeze,
        "runs": runs,
        "concurrency": concurrency,
        "completed": sum(o.ok for o in outcomes),
        "seconds": round(elapsed, 3),
        "runs_per_s": round(runs / elapsed, 1),
        "us_per_stage": round(elapsed / (runs * STAGES) * 1e6, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "spans_expected": expected if case != "untraced" else None,
        "spans_exported": exported,
    }


def memory_per_inflight_run(concurrency: int) -> dict[str, Any]:
    """Bytes held per run while ``concurrency`` runs are all parked inside a stage."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    holder: dict[str, Any] = {"parked": 0}

    @stage("park", description="Waits for the gate", register=False)
    async def park(ctx: Context) -> Context:
        holder["parked"] += 1
        if holder["parked"] == holder.get("expect"):
            holder["all_parked"].set()
        await holder["gate"].wait()
        return ctx

    registry = Registry([step, park])
    exp = Experiment(id="mem", pipeline=[StageDef(name="step"), StageDef(name="park")])
    result: dict[str, Any] = {}

    async def main() -> None:
        holder["gate"] = anyio.Event()
        holder["gate"].set()  # warm-up passes straight through: imports, caches, the plan
        await run_batch([exp] * 8, registry=registry, max_concurrency=8)
        holder["gate"] = anyio.Event()
        holder["parked"] = 0
        holder["expect"] = concurrency
        holder["all_parked"] = anyio.Event()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        async with anyio.create_task_group() as tg:

            async def batch() -> None:
                await run_batch([exp] * concurrency, registry=registry,
                                max_concurrency=concurrency)  # fmt: skip

            tg.start_soon(batch)
            with anyio.fail_after(60):
                await holder["all_parked"].wait()
            held = tracemalloc.get_traced_memory()[0] - before
            holder["gate"].set()
        tracemalloc.stop()
        result.update(
            case="memory_per_inflight_run",
            inflight=concurrency,
            bytes_per_run=round(held / concurrency),
            target_bytes=20_000,
            within_target=held / concurrency < 20_000,
        )

    asyncio.run(main())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--freeze", action="store_true", help="also run every case after gc.freeze()"
    )
    args = parser.parse_args()
    if args.sink:
        serve_sink()
        return
    if args.case == "memory":
        print(json.dumps(memory_per_inflight_run(args.concurrency)))
        return
    if args.case:
        result = run_case(args.case, args.runs, args.concurrency, args.endpoint, args.freeze)
        print(json.dumps(result))
        return
    sink = subprocess.Popen([sys.executable, __file__, "--sink"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert sink.stdout is not None
    endpoint = f"http://127.0.0.1:{json.loads(sink.stdout.readline())['port']}"
    cases = ("untraced", "traced_discard", "traced_otlp_http")
    samples: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    try:
        for repeat in range(args.repeats):
            for freeze in (False, True) if args.freeze else (False,):
                order = cases if repeat % 2 == 0 else tuple(reversed(cases))
                for case in order:
                    cmd = [
                        sys.executable,
                        __file__,
                        "--case",
                        case,
                        "--runs",
                        str(args.runs),
                        "--concurrency",
                        str(args.concurrency),
                        "--endpoint",
                        endpoint,
                    ]
                    if freeze:
                        cmd.append("--freeze")  # fmt: skip
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
                    line = out.stdout.strip().splitlines()[-1]
                    print(line, flush=True)
                    samples.setdefault((case, freeze), []).append(json.loads(line))
        mem = subprocess.run(
            [sys.executable, __file__, "--case", "memory", "--concurrency", str(args.concurrency)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        print(mem.stdout.strip().splitlines()[-1], flush=True)
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait(timeout=10)
    for freeze in (False, True) if args.freeze else (False,):
        untraced = samples[("untraced", freeze)]
        base = statistics.median(r["runs_per_s"] for r in untraced)
        for case in cases[1:]:
            runs = samples[(case, freeze)]
            rate = statistics.median(r["runs_per_s"] for r in runs)
            # Each repeat runs the cases back to back: its own ratio cancels the machine's drift.
            paired = statistics.median(
                r["runs_per_s"] / u["runs_per_s"] for r, u in zip(runs, untraced, strict=True)
            )
            print(json.dumps({
                "ratio": f"{case}/untraced",
                "gc_freeze": freeze,
                "untraced_runs_per_s": round(base, 1),
                "traced_runs_per_s": round(rate, 1),
                "throughput_ratio": round(rate / base, 3),
                "median_paired_ratio": round(paired, 3),
                "target": 0.75,
                "within_target": paired >= 0.75,
                "spans_dropped": sum(r["spans_expected"] - (r["spans_exported"] or 0)
                                     for r in runs),
            }))  # fmt: skip


if __name__ == "__main__":
    main()
