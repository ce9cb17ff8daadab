"""The README's first command: `crucible run examples/quickstart.yaml`, as a user runs it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crucible.store import RunStore
from crucible.telemetry.jsonl import read_otlp_jsonl

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_every_built_in_stage(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    proc = subprocess.run(
        [sys.executable, "-m", "crucible", "run", "examples/quickstart.yaml", "--run-id", "qs-1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "completed" in proc.stdout and "jaeger" in proc.stdout
    reports = sorted(p.suffix for p in (tmp_path / "reports").iterdir())
    assert reports == [".html", ".json", ".md"]

    async def stored() -> None:
        async with RunStore(tmp_path / ".crucible" / "runs.db") as store:
            info = await store.get_run("qs-1")
            assert info is not None and info.status == "completed"
            assert [a.stage for a in info.attempts] == [
                "load_examples", "validate", "data_checks", "guardrails", "bench", "report",
            ]  # fmt: skip
            assert len(info.artifacts) == 3
            assert info.metrics["bench"]["test_results"]["ttest"]["p_value"] < 0.05
            assert info.metrics["data_checks"]["missing_required"] == 1

    asyncio.run(stored())
    spans = read_otlp_jsonl(tmp_path / "traces.jsonl")
    names = [s["name"] for s in spans]
    assert "RUN quickstart" in names and names.count("stage bench") == 1
    assert len({s["trace_id"] for s in spans}) == 1


def test_the_shipped_sweep_runs_one_stored_run_per_point(tmp_path: Path) -> None:
    """`crucible batch examples/sweep.yaml`, as the README shows it, from another folder."""
    store = tmp_path / "runs.db"
    proc = subprocess.run(
        [sys.executable, "-m", "crucible", "batch", str(ROOT / "examples" / "sweep.yaml"),
         "--exporter", "none", "--store", str(store), "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout

    async def stored() -> list[tuple[str, float, str]]:
        async with RunStore(store) as s:
            runs = await s.list_runs(limit=100)
            return sorted(
                (r.status, r.assigns["matrix"]["bench.alpha"],
                 r.assigns["matrix"]["bench.effect_size"])
                for r in runs
            )  # fmt: skip

    points = asyncio.run(stored())
    assert points == sorted(
        ("completed", a, e) for a in (0.01, 0.05, 0.1) for e in ("hedges_g", "cohens_d")
    )
