"""Per-call cost of Context helpers at 1k, 10k and 100k prior entries (JSON lines + 100k/1k ratio).

Run: python benchmarks/context_bench.py [--calls N] [--repeats R]
Each measurement is the median over R repeats of the mean cost of N calls made on a Context that
already holds the given number of entries. Target: ratio 100k/1k <= 2 for every helper.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable

from crucible import Context, Experiment

SIZES = (1_000, 10_000, 100_000)


def base() -> Context:
    return Context(experiment_id="bench", run_id="r", experiment=Experiment(id="bench"))


def prefill(kind: str, n: int) -> Context:
    c = base()
    if kind == "put_metric":
        return c.merge_metrics({f"m{i}": i for i in range(n)})
    if kind == "add_output":
        return c.add_outputs(range(n))
    if kind == "assign":
        return c.assign({f"a{i}": i for i in range(n)})
    for i in range(n):
        c = c.mark_stage_complete(f"s{i}")
    return c


def step(kind: str) -> Callable[[Context, int], Context]:
    if kind == "put_metric":
        return lambda c, i: c.put_metric(f"new{i}", i)
    if kind == "add_output":
        return lambda c, i: c.add_output(i)
    if kind == "assign":
        return lambda c, i: c.assign(f"new{i}", i)
    return lambda c, i: c.mark_stage_complete(f"new{i}")


def measure(kind: str, n: int, calls: int, repeats: int) -> float:
    ctx = prefill(kind, n)
    fn = step(kind)
    samples = []
    gc.collect()
    gc.disable()  # as timeit does: time the helper, not the collector walking 100k live objects
    for _ in range(repeats):
        c = ctx
        t0 = time.perf_counter()
        for i in range(calls):
            c = fn(c, i)
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    gc.enable()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for kind in ("put_metric", "add_output", "assign", "mark_stage_complete"):
        results = {n: measure(kind, n, args.calls, args.repeats) for n in SIZES}
        for n, us in results.items():
            print(json.dumps({"helper": kind, "prior_entries": n, "us_per_call": round(us, 3)}))
        ratio = results[100_000] / results[1_000]
        print(
            json.dumps(
                {"helper": kind, "ratio_100k_over_1k": round(ratio, 3), "target": 2.0,
                 "within_target": ratio <= 2.0}
            )
        )  # fmt: skip


if __name__ == "__main__":
    main()
