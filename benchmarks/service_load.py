"""Load on the example FastAPI service: ``POST /runs`` of a 3-stage experiment, traced vs untraced.

The service (examples/service.py, demo stages tally, chatter, tally; nothing sleeps) runs under
uvicorn, 1 worker, in its own process on a free 127.0.0.1 port; this process is the load
generator: --concurrency workers, each with its own one-connection httpx.AsyncClient (a shared
client's pool costs more CPU than the server), sending a fixed number of requests after a
warm-up. No run store unless --store (SQLite in a temporary folder). Cases:
  untraced          ``create_app(tracing=False)``: no FastAPI instrumentation; the engine still
                    makes its spans and ids with its private, export-free provider
  traced_discard    FastAPI instrumentation + SDK TracerProvider + BatchSpanProcessor into a
                    counting exporter that drops spans (the in-process cost of tracing)
  traced_otlp_http  same, but ``crucible.telemetry.setup.configure`` exporting OTLP/HTTP to a
                    discarding sink in a third process (adds protobuf encoding and HTTP posts)
Traced requests each carry their own ``traceparent``; the warm-up checks that the run's trace id
is the request's. Each case gets a fresh server per repeat; repeats alternate the cases (the
order rotates) and the summary lines give medians. Logging is at WARNING (no per-request lines).

Reading the output (JSON lines): one ``run`` line per case and repeat, then one ``summary`` line
per case, then ``ratio`` lines (traced/untraced): ``throughput_ratio`` < 1 and ``p99_ratio`` > 1
measure what tracing costs. At a fixed concurrency p50 is roughly concurrency / throughput
(requests queue in the server), so the tail (p99, max) is the latency number of interest.
``server_cpu_us_per_req`` (from /proc, Linux only) is the server process's CPU per request,
the least noisy number; ``client_cpu_share`` near 1 means the load generator, not the server,
was the limit; ``loadavg_1m`` above the core count means other processes took CPU too.
``spans_per_request`` should be 5 in traced cases (SERVER + RUN + 3 stages). On a machine with
few cores the sink and client compete with the server for CPU. This is a benchmark: it prints
numbers and never fails on them.

Run: python benchmarks/service_load.py [--requests 3000] [--concurrency 32] [--repeats 3] [--store]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from bench_common import CountingExporter, serve_sink

REPO: Final = Path(__file__).resolve().parents[1]
CASES: Final = ("untraced", "traced_discard", "traced_otlp_http")
SPANS_PER_REQUEST: Final = 5  # SERVER + RUN + 3 stages
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 30.0
REQUEST_TIMEOUT_S: Final = 30.0
PHASE_TIMEOUT_S: Final = 600.0
BODY: Final = json.dumps(
    {
        "experiment": {
            "id": "service-load",
            "pipeline": [
                {"name": "tally", "options": {"factor": 2}},
                {"name": "chatter", "options": {"lines": 1}},
                {"name": "tally"},
            ],
        },
        "assigns": {"numbers": [1, 2, 3], "tag": "bench"},
    }
).encode()


# --- the server process ----------------------------------------------------------------------


def serve(case: str, endpoint: str | None, db: str | None) -> None:
    """Serve the example app for ``case``; print the port, then span counts after stdin closes."""
    sys.path.insert(0, str(REPO))  # examples/ is not an installed package
    import uvicorn
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import crucible.logging
    from crucible.store import RunStore
    from crucible.telemetry.setup import TelemetryHandle, configure
    from examples.service import create_app
    from examples.service_stages import demo_registry

    crucible.logging.configure(json=True, level="warning")
    provider: TracerProvider | None = None
    discard: CountingExporter | None = None
    handle: TelemetryHandle | None = None
    if case == "traced_discard":
        discard = CountingExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(discard, max_queue_size=1 << 16))
    elif case == "traced_otlp_http":
        handle = configure(
            "crucible-service-load",
            "otlp",
            endpoint=endpoint,
            protocol="http/protobuf",
            set_global=False,
            max_queue_size=1 << 16,
            export_timeout_s=10,
        )
        provider = handle.tracer_provider
    store = RunStore(db) if db else None
    app = create_app(
        store=store, registry=demo_registry(), tracer_provider=provider, tracing=case != "untraced"
    )
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so; with proto 0 every
    # response waits ~40 ms for a delayed ACK (Nagle), hiding all the costs measured here.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )

    class Announcing(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            loop = type(asyncio.get_running_loop()).__name__
            http = getattr(config, "http_protocol_class", type).__name__
            print(json.dumps({"port": port, "loop": loop, "http": http}), flush=True)

    server = Announcing(config)

    def stop_on_eof() -> None:  # the parent closes our stdin (or dies): shut down
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_on_eof, daemon=True).start()

    async def main() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            if store is not None:
                await store.close()

    asyncio.run(main())
    exported: int | None = None
    if discard is not None and provider is not None:
        provider.shutdown()
        exported = discard.count
    if handle is not None:
        exported = handle.shutdown(timeout_s=20).exported
    print(json.dumps({"spans_exported": exported}), flush=True)


# --- the OTLP/HTTP sink process --------------------------------------------------------------


# --- process handling in the parent ----------------------------------------------------------


@dataclass
class Child:
    """A child process of this script and the JSON lines it has printed."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[dict[str, Any]]

    def next_line(self, timeout: float) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            code = self.proc.poll()
            raise RuntimeError(
                f"child said nothing within {timeout:g} s (exit code {code})"
            ) from None

    def stop(self) -> None:
        """Close stdin (graceful), then terminate, then kill; each wait bounded."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@contextmanager
def child(*args: str) -> Iterator[Child]:
    """Run this script with ``args``; always stopped on exit."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with suppress(json.JSONDecodeError):
                lines.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    handle = Child(proc, lines)
    try:
        yield handle
    finally:
        handle.stop()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of ``pid`` from /proc (None where there is no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the load generator ----------------------------------------------------------------------


@dataclass
class Load:
    """What one phase of requests produced."""

    latencies: list[float]
    ok: int
    seconds: float
    client_cpu_s: float
    errors: Counter[str]
    trace_mismatches: int
    complete: bool


def traceparent(rng: random.Random) -> str:
    return f"00-{rng.getrandbits(128) or 1:032x}-{rng.getrandbits(64) or 1:016x}-01"


async def load(url: str, requests: int, concurrency: int, *, traced: bool, check: bool) -> Load:
    """Send ``requests`` POST /runs from ``concurrency`` workers; ``check`` parses the answers.

    Each worker owns a one-connection AsyncClient: one client shared by 32 tasks spends several
    times more CPU per request in httpcore's pool than the server does in the whole run.
    """
    rng = random.Random(requests)
    parents = [traceparent(rng) if traced else None for _ in range(requests)]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    mismatches = ok = 0
    pending = iter(range(requests))
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    base = {"content-type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal mismatches, ok
        for i in pending:
            parent = parents[i]
            headers = base if parent is None else {**base, "traceparent": parent}
            t0 = time.perf_counter()
            try:
                response = await client.post("/runs", content=BODY, headers=headers)
            except httpx.HTTPError as err:
                errors[type(err).__name__] += 1
                continue
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200:
                errors[f"http_{response.status_code}"] += 1
                continue
            ok += 1
            if check:
                answer = response.json()
                if answer.get("status") != "completed":
                    errors[f"run_{answer.get('status')}"] += 1
                if parent is not None and answer.get("trace_id") != parent[3:35]:
                    mismatches += 1

    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout)
            )
            for _ in range(concurrency)
        ]
        cpu0, t0 = time.process_time(), time.perf_counter()
        complete = True
        try:
            async with asyncio.timeout(PHASE_TIMEOUT_S), asyncio.TaskGroup() as tg:
                for client in clients:
                    tg.create_task(worker(client))
        except TimeoutError:
            complete = False
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return Load(latencies, ok, seconds, cpu, errors, mismatches, complete)


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def run_case(
    case: str, repeat: int, args: argparse.Namespace, endpoint: str | None, tmp: Path | None
) -> dict[str, Any]:
    """One fresh server for ``case``: warm up, measure, stop, and describe the phase."""
    serve_args = ["--serve", case]
    if endpoint is not None:
        serve_args += ["--endpoint", endpoint]
    if tmp is not None:
        serve_args += ["--db", str(tmp / f"runs-{case}-{repeat}.db")]
    traced = case != "untraced"
    with child(*serve_args) as server:
        hello = server.next_line(START_TIMEOUT_S)
        url = f"http://127.0.0.1:{hello['port']}"
        warm = asyncio.run(load(url, args.warmup, args.concurrency, traced=traced, check=True))
        cpu_before = cpu_seconds(server.proc.pid)
        result = asyncio.run(load(url, args.requests, args.concurrency, traced=traced, check=False))
        cpu_after = cpu_seconds(server.proc.pid)
        server.stop()
        try:  # span counts, printed after a clean shutdown
            stats = server.next_line(5)
        except RuntimeError:
            stats = {}
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    total = args.warmup + args.requests
    exported = stats.get("spans_exported")
    return {
        "kind": "run",
        "case": case,
        "repeat": repeat,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "store": args.store,
        "server": f"uvicorn 1 worker, loop={hello.get('loop')}, http={hello.get('http')}",
        "ok": result.ok,
        "errors": dict(result.errors),
        "warmup_errors": dict(warm.errors),
        "complete": result.complete,
        "seconds": round(result.seconds, 3),
        "req_per_s": round(result.ok / result.seconds, 1) if result.seconds > 0 else None,
        "p50_ms": ms(quantile(result.latencies, 0.50)),
        "p99_ms": ms(quantile(result.latencies, 0.99)),
        "max_ms": ms(max(result.latencies, default=None)),
        "server_cpu_us_per_req": (
            round(server_cpu / args.requests * 1e6, 1) if server_cpu is not None else None
        ),
        "client_cpu_share": round(result.client_cpu_s / result.seconds, 3),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews the numbers
        "trace_continued": (warm.trace_mismatches == 0) if traced else None,
        "spans_exported": exported,
        "spans_missing": total * SPANS_PER_REQUEST - exported if exported is not None else None,
        "spans_per_request": round(exported / total, 3) if exported is not None else None,
    }


def median_of(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def bench(args: argparse.Namespace) -> None:
    """Alternate the cases over the repeats, then print medians and traced/untraced ratios."""
    cases = [c for c in CASES if c in args.cases.split(",")]
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    with ExitStack() as stack:
        tmp = None
        if args.store:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crucible-load-")))
        endpoint = None
        if "traced_otlp_http" in cases:
            sink = stack.enter_context(child("--sink"))
            endpoint = f"http://127.0.0.1:{sink.next_line(START_TIMEOUT_S)['port']}"
        for repeat in range(1, args.repeats + 1):
            shift = (repeat - 1) % len(cases)
            for case in cases[shift:] + cases[:shift]:
                row = run_case(case, repeat, args, endpoint, tmp)
                rows[case].append(row)
                print(json.dumps(row), flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for case in cases:
        keys = ("req_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_req")
        summary[case] = {k: median_of(rows[case], k) for k in keys}
        line = {"kind": "summary", "case": case, "median_of_repeats": args.repeats}
        print(json.dumps({**line, **summary[case]}), flush=True)
    if "untraced" not in summary:
        return
    base = summary["untraced"]
    for case in cases:
        if case == "untraced":
            continue
        s = summary[case]
        line = {
            "kind": "ratio",
            "ratio": f"{case}/untraced",
            "throughput_ratio": ratio(s["req_per_s"], base["req_per_s"]),
            "p50_ratio": ratio(s["p50_ms"], base["p50_ms"]),
            "p99_ratio": ratio(s["p99_ms"], base["p99_ms"]),
            "server_cpu_ratio": ratio(s["server_cpu_us_per_req"], base["server_cpu_us_per_req"]),
        }
        print(json.dumps(line), flush=True)


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=positive, default=3000, help="measured requests")
    parser.add_argument("--warmup", type=positive, default=200, help="unmeasured requests first")
    parser.add_argument("--concurrency", type=positive, default=32, help="requests in flight")
    parser.add_argument("--repeats", type=positive, default=3, help="fresh servers per case")
    parser.add_argument("--store", action="store_true", help="record runs in SQLite (temp dir)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of cases to run")
    parser.add_argument("--serve", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        serve_sink()
    elif args.serve:
        serve(args.serve, args.endpoint, args.db)
    else:
        unknown = set(args.cases.split(",")) - set(CASES)
        if unknown:
            parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
        bench(args)


if __name__ == "__main__":
    main()
