"""Ray batch overhead: 10,000 runs x 5 stages in-process vs on Ray (a local instance, 2 actors).

Each case runs in its own child process (so each driver's peak memory is its own), the two cases
back to back in each repeat (order alternating). Both export every span over OTLP/HTTP to one
real receiver on 127.0.0.1 that this script runs; the in-process case through the driver's SDK
provider, the Ray case from the actors. Each case prints one JSON line: runs/s, spans expected
(1 batch span + runs x 6) vs received, and the driver's peak RSS. Then the ratio Ray/in-process
as the median of each repeat's own ratio (target >= 0.5: on 2 cores Ray cannot be faster; the
point is its per-run overhead and that nothing is lost).

Run: python benchmarks/ray_batch.py [--runs 10000] [--concurrency 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

STAGES = 5
TARGET = 0.5
_MARK = "RESULT "


def _make_stages() -> list[str]:
    import crucible

    names = []
    for i in range(STAGES):

        async def step(ctx: crucible.Context, _i: int = i) -> crucible.Context:
            return ctx.put_metric(f"s{_i}", _i)

        name = f"bench_ray_s{i}"
        crucible.stage(name, description=f"trivial stage {i}")(step)
        names.append(name)
    return names


async def _case(mode: str, runs: int, concurrency: int, endpoint: str) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import crucible

    exp = {"id": "ray-bench", "pipeline": [{"name": n} for n in _make_stages()]}
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), max_queue_size=1 << 20
        )
    )
    executor: Any = None
    if mode == "ray":
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        from crucible.executors import RayExecutor

        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
               "OTEL_BSP_MAX_QUEUE_SIZE": "1048576"}  # fmt: skip
        executor = RayExecutor(
            actors=2, num_cpus=0, env=env, init_kwargs={"num_cpus": 2, "log_to_driver": False}
        )
        await executor.workers()  # start-up is not per-run overhead
    started = time.perf_counter()
    outcomes = await crucible.run_batch([exp] * runs, max_concurrency=concurrency,
                                        tracer_provider=provider, executor=executor)  # fmt: skip
    elapsed = time.perf_counter() - started
    if executor is not None:
        await executor.shutdown()
    provider.force_flush()
    provider.shutdown()
    ok = sum(1 for o in outcomes if o.ok)
    peak_mb = _peak_rss_kb() / 1024
    return {"mode": mode, "runs": runs, "completed": ok, "seconds": round(elapsed, 3),
            "runs_per_s": round(runs / elapsed, 1), "peak_rss_mb": round(peak_mb, 1)}  # fmt: skip


def _peak_rss_kb() -> int:
    """This process image's peak RSS (VmHWM): ru_maxrss would keep the forking parent's."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(mode: str, runs: int, concurrency: int, endpoint: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--runs", str(runs),
           "--concurrency", str(concurrency), "--endpoint", endpoint]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} case failed:\n{done.stderr[-4000:]}")
    line = next(ln for ln in reversed(done.stdout.splitlines()) if ln.startswith(_MARK))
    result: dict[str, Any] = json.loads(line.removeprefix(_MARK))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["local", "ray"])
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(_case(args.child, args.runs, args.concurrency, args.endpoint))
        print(_MARK + json.dumps(result), flush=True)
        return

    from crucible.testing.otlp import OtlpHttpReceiver

    receiver = OtlpHttpReceiver().start()
    expected = 1 + args.runs * (1 + STAGES)
    ratios: list[float] = []
    try:
        for rep in range(args.repeats):
            order = ["local", "ray"] if rep % 2 == 0 else ["ray", "local"]
            found: dict[str, dict[str, Any]] = {}
            for mode in order:
                receiver.clear()
                result = _child(mode, args.runs, args.concurrency, receiver.endpoint)
                for _ in range(600):  # the exporters have flushed; let the receiver catch up
                    if len(receiver.spans()) >= expected:
                        break
                    time.sleep(0.05)
                result.update(repeat=rep, spans_expected=expected,
                              spans_received=len(receiver.spans()))  # fmt: skip
                print(json.dumps(result), flush=True)
                found[mode] = result
            ratios.append(found["ray"]["runs_per_s"] / found["local"]["runs_per_s"])
    finally:
        receiver.stop()
    ratio = statistics.median(ratios)
    print(json.dumps({"ratio": "ray/local runs_per_s", "median_paired": round(ratio, 3),
                      "repeats": [round(r, 3) for r in ratios], "target": TARGET,
                      "within_target": ratio >= TARGET}))  # fmt: skip


if __name__ == "__main__":
    main()
