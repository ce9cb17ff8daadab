"""Results at a glance: the run summary, ``batch --show/--export`` and ``runs list`` columns.

Driven as subprocesses on the quickstart data with the built-in stages (bench, data_checks).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crucible.store import RunInfo, RunStore

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 90

SWEEP = """
id: sweep
pipeline:
  - name: load_examples
    options: {path: data/quickstart.jsonl, as_outputs: true}
  - name: data_checks
  - name: bench
    options: {tests: [welch], effect_size: hedges_g}
matrix:
  bench.alpha: [0.01, 0.05]
  bench.confidence_level: [0.9, 0.95]
"""


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "CRUCIBLE_"))
        and k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    base["PYTHONPATH"] = str(REPO)
    base["NO_COLOR"] = "1"
    return base


def cli_many(
    calls: Sequence[tuple[Path, Sequence[str]]],
    env: Mapping[str, str],
    extra_env: Mapping[str, str] | None = None,
) -> list[subprocess.CompletedProcess[str]]:
    """Independent invocations at once, each in its own process."""

    def one(call: tuple[Path, Sequence[str]]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crucible", *call[1]],
            cwd=call[0],
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=min(4, len(calls))) as pool:
        return list(pool.map(one, calls))


def quickstart_dir(root: Path, name: str) -> Path:
    """A copy of examples/ (the quickstart file, its data, and the sweep above)."""
    where = root / name
    shutil.copytree(REPO / "examples", where, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (where / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    return where


def stored(cwd: Path) -> list[RunInfo]:
    async def read() -> list[RunInfo]:
        async with RunStore(cwd / ".crucible" / "runs.db") as store:
            return await store.list_runs(limit=100)

    return asyncio.run(read())


def test_run_summary_leads_with_headlines_and_never_cuts_a_token(
    tmp_path: Path, env: dict[str, str]
) -> None:
    text_dir, json_dir = quickstart_dir(tmp_path, "text"), quickstart_dir(tmp_path, "json")
    text, as_json = cli_many(
        [
            (text_dir, ["run", "quickstart.yaml", "--exporter", "none"]),
            (json_dir, ["run", "quickstart.yaml", "--exporter", "none", "--json"]),
        ],
        env,
        {"COLUMNS": "80"},
    )
    assert text.returncode == 0, text.stderr
    (info,) = stored(text_dir)
    out = text.stdout
    headline = info.metrics["bench"]["headline"]
    assert headline.startswith("candidate \u2212 baseline = 0.077, 95 % CI [")
    # headlines before the metric table, whole (wrapped between words at 80 columns)
    assert out.index("results") < out.index("metrics") < out.index("reports:")
    results = out[out.index("results") : out.index("metrics")]
    assert headline in " ".join(results.split())
    assert "1 of 20 examples flagged: #13 (id candidate-3) missing output" in " ".join(
        results.split()
    )
    assert "bench.headline" not in out  # shown once, as a headline
    # the run id once (report file names aside)
    id_lines = [ln for ln in out.splitlines() if info.run_id in ln and "reports/" not in ln]
    assert len(id_lines) == 1 and id_lines[0].startswith(f"run {info.run_id} completed")
    assert f"  report.summary.html: reports/quickstart-{info.run_id}-summary.html (html)" in out
    # a long value is elided between two JSON items: what is left still parses as JSON
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("bench.test_results.welch"))
    shown = row.split(None, 1)[1].strip()
    assert shown.endswith(" …"), row
    kept = json.loads(shown.removesuffix(" …") + "}")
    assert kept["test"] == "welch" and kept["statistic"] == 2.5
    assert not re.search(r"\d…|[A-Za-z]…", out)  # no cut through a number or word

    # --json: the finished run with every value whole; the stage board went to stderr
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    (json_info,) = stored(json_dir)
    assert doc["run_id"] == json_info.run_id and doc["status"] == "completed"
    assert doc["metrics"]["bench"] == json_info.metrics["bench"]
    assert doc["headlines"]["bench"] == json_info.metrics["bench"]["headline"]
    assert "stage bench ... success" in as_json.stderr


def test_batch_show_export_and_runs_list_columns(tmp_path: Path, env: dict[str, str]) -> None:
    work = quickstart_dir(tmp_path, "sweep")
    bad_dir = quickstart_dir(tmp_path, "bad")
    default, bad, as_json = cli_many(
        [
            (work, ["batch", "sweep.yaml", "--exporter", "none", "--export", "out.csv"]),
            (bad_dir, ["batch", "sweep.yaml", "--exporter", "none", "--export", "no/x.csv"]),
            (bad_dir, ["batch", "sweep.yaml", "--exporter", "none", "--export", "out.json"]),
        ],
        env,
        {"COLUMNS": "200"},
    )
    # a bad --export path is bad input: exit 2, nothing ran
    assert bad.returncode == 2 and "--export 'no/x.csv'" in bad.stderr
    assert "does not exist" in bad.stderr and not (bad_dir / ".crucible").exists()
    # a .json name would get CSV in it: refused the same way
    assert as_json.returncode == 2 and "--export writes CSV" in as_json.stderr
    assert not (bad_dir / "out.json").exists() and not (bad_dir / ".crucible").exists()

    assert default.returncode == 0, default.stderr
    runs = stored(work)
    assert len(runs) == 4
    batch_id = runs[0].batch_id
    assert batch_id is not None and len(batch_id) == 36
    header = next(ln for ln in default.stdout.splitlines() if ln.lstrip().startswith("#"))
    assert "bench.headline" in header and "data_checks.headline" in header
    assert "dataset.path" not in default.stdout
    for run in runs:
        assert run.run_id[:8] in default.stdout and run.run_id not in default.stdout
        row = next(ln for ln in default.stdout.splitlines() if run.run_id[:8] in ln)
        assert "candidate \u2212" in row  # the headline's cell starts on the run's row...
        words = set(default.stdout.split())  # ...and wraps between words, none cut
        assert set(run.metrics["bench"]["headline"].split()) <= words
    assert f"exported: {work / 'out.csv'} (4 runs)" in default.stderr

    with (work / "out.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {r.run_id: r for r in runs}
    assert sorted(r["run_id"] for r in rows) == sorted(by_id)  # full ids
    assert [r["index"] for r in rows] == ["0", "1", "2", "3"]
    assert [(r["matrix.bench.alpha"], r["matrix.bench.confidence_level"]) for r in rows] == [
        ("0.01", "0.9"), ("0.01", "0.95"), ("0.05", "0.9"), ("0.05", "0.95")
    ]  # fmt: skip
    for row in rows:
        metrics = by_id[row["run_id"]].metrics
        welch = metrics["bench"]["test_results"]["welch"]
        assert float(row["bench.test_results.welch.p_value"]) == welch["p_value"]  # full precision
        assert row["bench.headline"] == metrics["bench"]["headline"]
        assert row["status"] == "completed" and row["error"] == ""

    p_key = "bench.test_results.welch.p_value"
    shown, listed, listed_json, none = cli_many(
        [
            (work, ["batch", "sweep.yaml", "--exporter", "none", "--show", f"{p_key},bench.alph"]),
            (work, ["runs", "list", "--batch", batch_id[:8], "--metric", p_key,
                    "--metric", "bench.alpha"]),
            (work, ["runs", "list", "--batch", batch_id, "--metric", p_key, "--json"]),
            (work, ["runs", "list", "--batch", "zzzz"]),
        ],
        env,
        {"COLUMNS": "200"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    header = next(ln for ln in shown.stdout.splitlines() if ln.lstrip().startswith("#"))
    assert p_key in header and "bench.headline" not in header
    assert "warning: --show 'bench.alph': no run has this metric; did you mean bench.alpha" in (
        shown.stderr
    )
    assert shown.stdout.count(" 0.0244 ") == 4  # rounded in the table

    assert listed.returncode == 0, listed.stderr
    lines = [ln for ln in listed.stdout.splitlines() if batch_id[:8] in ln]
    assert len(lines) == 4  # only the first batch, found by the start of its id
    assert all(" 0.0244 " in ln for ln in lines)
    assert {ln.split()[0] for ln in lines} == set(by_id)
    assert "batch" in listed.stdout.splitlines()[0] and p_key in listed.stdout.splitlines()[0]

    docs = json.loads(listed_json.stdout)
    assert {d["run_id"] for d in docs} == set(by_id)
    assert all(d["batch_id"] == batch_id for d in docs)
    assert [d["selected_metrics"] for d in docs] == [
        {p_key: by_id[d["run_id"]].metrics["bench"]["test_results"]["welch"]["p_value"]}
        for d in docs
    ]
    assert none.returncode == 0 and "no runs recorded for batch 'zzzz'" in none.stdout
