"""Store throughput: 10,000 runs x 5 stages at concurrency 256, without and with a run store.

All in one process, the cases back to back in each repeat (order alternating):
  none        run_batch without a store
  sqlite      the SQLite store on a fresh temporary file
  postgresql  the PostgreSQL store on a fresh database this script creates (and drops after)
Each case prints one JSON line: runs/s, and the run and attempt rows expected vs found in the
database afterwards (counted there; they must be equal). Then, per store, the ratio to no store
as the ratio of medians and as the median of each repeat's own ratio (within_target uses that
one; target >= 0.8).

Run: python benchmarks/store_throughput.py [--runs 10000] [--concurrency 256] [--repeats 5]
     [--pg postgresql://postgres@127.0.0.1:5432/postgres] [--tune-gc]

--tune-gc applies the collector settings the ``crucible`` command uses for its own process
(crucible.gcsettings.THRESHOLDS, then gc.freeze() once everything is imported): what a program
that runs big batches can do for itself. Without it Python's defaults apply.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from crucible import Context, Experiment, Registry, StageDef, run_batch, stage
from crucible.gcsettings import THRESHOLDS
from crucible.store import RunStore, normalize_url

STAGES = 5
TARGET = 0.8


@stage("step", description="A trivial awaited step", register=False)
async def step(ctx: Context) -> Context:
    await anyio.lowlevel.checkpoint()
    return ctx


async def count_rows(url: str) -> tuple[int, int]:
    """(runs, attempts) in the database, counted directly."""
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            runs = (await conn.execute(sa.text("SELECT count(*) FROM runs"))).scalar_one()
            attempts = (
                await conn.execute(sa.text("SELECT count(*) FROM stage_attempts"))
            ).scalar_one()
    finally:
        await engine.dispose()
    return int(runs), int(attempts)


async def admin(pg: str, sql: str) -> None:
    url = make_url(pg)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        database=url.database or "postgres",
    )  # fmt: skip
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run_case(case: str, runs: int, concurrency: int, pg: str, folder: Path) -> dict[str, Any]:
    exp = Experiment(id="throughput", pipeline=[StageDef(name="step") for _ in range(STAGES)])
    registry = Registry([step])
    url: str | None = None
    name = f"crucible_bench_{uuid.uuid4().hex[:10]}"
    if case == "sqlite":
        url = str(folder / f"{name}.db")
    elif case == "postgresql":
        await admin(pg, f'CREATE DATABASE "{name}"')
        url = make_url(pg).set(database=name).render_as_string(hide_password=False)
    try:
        store = None if url is None else RunStore(url, journal_dir=folder / "journal")
        if store is not None:
            await store.open()
        t0 = time.perf_counter()
        outcomes = await run_batch([exp] * runs, max_concurrency=concurrency, registry=registry,
                                   store=store)  # fmt: skip
        elapsed = time.perf_counter() - t0
        found: tuple[int, int] | None = None
        if store is not None and url is not None:
            await store.close()
            found = await count_rows(url)
    finally:
        if case == "postgresql":
            await admin(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        "case": case,
        "runs": runs,
        "concurrency": concurrency,
        "completed": sum(o.ok for o in outcomes),
        "seconds": round(elapsed, 3),
        "runs_per_s": round(runs / elapsed, 1),
        "rows_expected": None if found is None else [runs, runs * STAGES],
        "rows_found": None if found is None else list(found),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--tune-gc", action="store_true", help="the crucible command's collector settings"
    )
    parser.add_argument(
        "--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an admin connection to the server the postgresql case uses",
    )  # fmt: skip
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    if args.tune_gc:
        gc.set_threshold(*THRESHOLDS)
        gc.freeze()
    cases = ("none", "sqlite", "postgresql")
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for case in cases if repeat % 2 == 0 else tuple(reversed(cases)):
                gc.collect()
                result = asyncio.run(run_case(case, args.runs, args.concurrency, args.pg,
                                              Path(tmp)))  # fmt: skip
                print(json.dumps({"repeat": repeat, **result}), flush=True)
                samples[case].append(result)
    base = samples["none"]
    for case in cases[1:]:
        got = samples[case]
        paired = statistics.median(
            r["runs_per_s"] / b["runs_per_s"] for r, b in zip(got, base, strict=True)
        )
        print(json.dumps({
            "ratio": f"{case}/none",
            "none_runs_per_s": round(statistics.median(b["runs_per_s"] for b in base), 1),
            "store_runs_per_s": round(statistics.median(r["runs_per_s"] for r in got), 1),
            "throughput_ratio": round(statistics.median(r["runs_per_s"] for r in got)
                                      / statistics.median(b["runs_per_s"] for b in base), 3),
            "median_paired_ratio": round(paired, 3),
            "paired_ratios": [round(r["runs_per_s"] / b["runs_per_s"], 3)
                              for r, b in zip(got, base, strict=True)],
            "target": TARGET,
            "within_target": paired >= TARGET,
            "tune_gc": args.tune_gc,
            "rows_equal": all(r["rows_found"] == r["rows_expected"] for r in got),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
