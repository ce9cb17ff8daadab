"""How fast the run browser's pages answer over a big SQLite store (JSON lines, milliseconds).

Run: python benchmarks/ui_list.py [--runs 100000] [--repeats 25] [--db PATH]
Fills a fresh SQLite store with ``--runs`` runs (bulk inserts through the store's own schema,
so values are encoded exactly as the store writes them), then requests each page through the
real app (in-process ASGI: the query and the rendering, no socket) and prints the median and
p95 of ``--repeats`` requests per case. Target: the first runs page under 200 ms at 100,000 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from crucible.store.schema import experiments, metadata, runs
from crucible.ui.app import create_app
from crucible.ui.config import UiSettings

CASES = {
    "first page": "/",
    "first page, 3 metric columns": "/?metric=score,loss,eval.accuracy",
    "status filter, sorted by a metric": "/?status=completed&sort=metric:score&metric=score",
    "experiment filter + text search": "/?experiment=exp-07&q=batch-0042",
    "page 1,000": "/?page=1000",
    "a 50-run batch (sweep page)": "/batch?id=batch-00042&by=score",
}
EXPERIMENTS = 20
BATCH_SIZE = 50


def fill(db: Path, n: int, seed: int = 7) -> float:
    """Write ``n`` runs with metrics, a matrix point and some assigns; return seconds taken."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    engine = sa.create_engine(f"sqlite:///{db}")
    now = dt.datetime.now(dt.UTC)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            experiments.insert(),
            [
                {
                    "id": f"exp-{i:02d}",
                    "definition": {"id": f"exp-{i:02d}", "pipeline": []},
                    "owner": None,
                    "tags": [],
                    "metadata": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(EXPERIMENTS)
            ],
        )
        chunk: list[dict[str, Any]] = []
        for i in range(n):
            started = now - dt.timedelta(seconds=n - i)
            status = rng.choices(["completed", "failed", "running"], [90, 8, 2])[0]
            alpha, depth = rng.choice([0.01, 0.05, 0.1]), rng.randint(1, 4)
            score = alpha * 10 + depth * 0.5 + rng.random()
            chunk.append(
                {
                    "id": f"run-{i:07d}",
                    "experiment_id": f"exp-{i % EXPERIMENTS:02d}",
                    "status": status,
                    "started_at": started,
                    "finished_at": None
                    if status == "running"
                    else started + dt.timedelta(seconds=2),
                    "trace_id": f"{rng.getrandbits(128):032x}",
                    "batch_id": f"batch-{i // BATCH_SIZE:05d}",
                    "metrics": {
                        "score": score,
                        "loss": 1 / (1 + score),
                        "eval": {"accuracy": 0.5 + score / 20, "n": 200},
                    },
                    "outputs": [{"i": k, "text": "an output"} for k in range(5)],
                    "assigns": {
                        "matrix": {"bench.alpha": alpha, "bench.depth": depth},
                        "examples": [{"input": "q", "output": "a"}] * 5,
                    },
                    "failure_stage": "bench" if status == "failed" else None,
                    "failure_message": "ValueError: boom" if status == "failed" else None,
                    "error_type": "ValueError" if status == "failed" else None,
                    "owner_pid": None,
                    "owner_host": None,
                }
            )
            if len(chunk) == 5000:
                conn.execute(runs.insert(), chunk)
                chunk = []
        if chunk:
            conn.execute(runs.insert(), chunk)
    engine.dispose()
    return time.perf_counter() - t0


async def measure(db: Path, repeats: int, n: int) -> None:
    app = create_app(UiSettings(store_url=str(db)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            for name, path in CASES.items():
                for _ in range(2):  # warm the page cache and the template cache
                    (await http.get(path)).raise_for_status()
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    response = await http.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    response.raise_for_status()
                times.sort()
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                print(
                    json.dumps(
                        {
                            "case": name,
                            "path": path,
                            "runs": n,
                            "repeats": repeats,
                            "median_ms": round(statistics.median(times), 1),
                            "p95_ms": round(p95, 1),
                        }
                    ),
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--db", type=Path, default=None, help="reuse or create this SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "runs.db"
        if not db.exists():
            took = fill(db, args.runs)
            print(
                json.dumps(
                    {
                        "filled_runs": args.runs,
                        "fill_s": round(took, 1),
                        "db_mb": round(db.stat().st_size / 1e6, 1),
                    }
                ),
                flush=True,
            )
        asyncio.run(measure(db, args.repeats, args.runs))


if __name__ == "__main__":
    main()
