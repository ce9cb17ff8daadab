"""``crucible batch``, driven as a subprocess from temporary working directories."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crucible.store import RunInfo, RunStore
from crucible.telemetry.jsonl import read_otlp_jsonl
from tests.support.cli_env import plugin_env
from tests.support.cli_proc import interrupt_when_started, run_on_pty

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60

GRID = """
id: grid
pipeline:
  - name: cli_grid
    options: {fail_on: ["2/b"]}
matrix:
  cli_grid.x: [1, 2]
  cli_grid.y: [a, b]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Repo root plus a fake distribution declaring the test stages as plugins; no OTEL env."""
    stages = {
        "cli_ok": "tests.support.cli_stages:ok_stage",
        "cli_grid": "tests.support.cli_stages:grid_stage",
        "cli_slow": "tests.support.cli_stages:slow_stage",
    }
    return plugin_env(tmp_path_factory.mktemp("site"), "crucible-cli-batch-test-plugin", stages)


def cli(cwd: Path, *args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "crucible", *args]
    return subprocess.run(
        cmd, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def cli_many(
    calls: Sequence[tuple[Path, Sequence[str]]], env: Mapping[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent invocations at once, each in its own process and directory."""
    with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
        return list(pool.map(lambda call: cli(call[0], *call[1], env=env), calls))


def workdir(root: Path, name: str, files: Mapping[str, str]) -> Path:
    path = root / name
    path.mkdir()
    for file, text in files.items():
        (path / file).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def stored_runs(cwd: Path, batch_id: str | None = None) -> list[RunInfo]:
    async def read() -> list[RunInfo]:
        async with RunStore(cwd / ".crucible" / "runs.db") as store:
            return await store.list_runs(limit=1000, batch_id=batch_id)

    return asyncio.run(read())


def test_matrix_batch_summary_json_store_and_trace(tmp_path: Path, env: dict[str, str]) -> None:
    text_dir = workdir(tmp_path, "text", {"grid.yaml": GRID})
    json_dir = workdir(tmp_path, "json", {"grid.yaml": GRID})
    one_dir = workdir(tmp_path, "one", {"one.yaml": "id: one\npipeline:\n  - name: cli_ok\n"})
    text, as_json, single = cli_many(
        [
            (text_dir, ["batch", "grid.yaml"]),
            (json_dir, ["batch", "grid.yaml", "--json", "--concurrency", "1",
                        "--batch-id", "b-json", "--exporter", "none"]),
            (one_dir, ["batch", "one.yaml", "--set", "cli_ok.count=5"]),
        ],
        env,
    )  # fmt: skip

    # text summary: one failing combination -> exit 1, the others complete
    assert text.returncode == 1, (text.stdout, text.stderr)
    out = text.stdout
    assert "3 completed, 1 failed (4 runs" in out
    assert "Traceback" not in text.stderr
    assert "stage 'cli_grid' ended with failure: ValueError: grid point 2/b fails" in out
    assert "progress: 4/4 done, 1 failed" in out  # plain progress lines, not a TTY
    batch_id = next(line for line in out.splitlines() if line.startswith("batch:")).split()[1]
    runs = stored_runs(text_dir)
    assert len(runs) == 4 and {r.batch_id for r in runs} == {batch_id}
    assert sorted(r.status for r in runs) == ["completed", "completed", "completed", "failed"]
    rows = {r.run_id: next(ln for ln in out.splitlines() if r.run_id[:8] in ln) for r in runs}
    assert all(r.run_id not in out for r in runs)  # short ids in the table (8 characters)
    for run in runs:
        assert run.status in rows[run.run_id]
    (failed,) = [r for r in runs if r.status == "failed"]
    assert "cli_grid.x=2, cli_grid.y=b" in rows[failed.run_id]
    assert failed.failure_stage == "cli_grid"
    assert f"store:    sqlite+aiosqlite:///{text_dir / '.crucible' / 'runs.db'}" in out

    # the trace: one BATCH span, the four RUN spans its children, all in one trace
    spans = read_otlp_jsonl(text_dir / "traces.jsonl")
    (batch_span,) = [s for s in spans if s["name"] == "BATCH grid"]
    run_spans = [s for s in spans if s["name"] == "RUN grid"]
    assert len(run_spans) == 4
    assert {s["trace_id"] for s in run_spans} == {batch_span["trace_id"]}
    assert {s["parent_span_id"] for s in run_spans} == {batch_span["span_id"]}
    assert batch_span["attributes"]["crucible.batch.id"] == batch_id
    assert f"trace id: {batch_span['trace_id']}" in out
    assert {r.trace_id for r in runs} == {batch_span["trace_id"]}

    # --json: a document listing the matrix points; --concurrency 1 and --batch-id honoured
    assert as_json.returncode == 1, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["batch_id"] == "b-json" and doc["experiment_id"] == "grid"
    assert doc["counts"] == {"completed": 3, "failed": 1, "timed_out": 0, "cancelled": 0}
    assert [r["index"] for r in doc["runs"]] == [0, 1, 2, 3]
    assert [r["matrix"] for r in doc["runs"]] == [
        {"cli_grid.x": x, "cli_grid.y": y} for x in (1, 2) for y in ("a", "b")
    ]
    assert [r["status"] for r in doc["runs"]] == ["completed"] * 3 + ["failed"]
    assert doc["runs"][0]["metrics"] == {"x": 1, "y": "a", "score": 1}
    assert doc["runs"][3]["error"]["type"] == "ValueError"
    assert doc["runs"][3]["error"]["stage"] == "cli_grid"
    assert all(len(r["trace_id"]) == 32 for r in doc["runs"])
    stored_json = {r.run_id: r.status for r in stored_runs(json_dir, "b-json")}
    assert stored_json == {r["run_id"]: r["status"] for r in doc["runs"]}
    assert not (json_dir / "traces.jsonl").exists()

    # no matrix: one run, exit 0
    assert single.returncode == 0, (single.stdout, single.stderr)
    assert "1 completed (1 run" in single.stdout
    header = next(ln for ln in single.stdout.splitlines() if ln.lstrip().startswith("#"))
    assert "count" in header.split()  # numeric metrics are the default columns
    row = next(ln for ln in single.stdout.splitlines() if ln.lstrip().startswith("0 "))
    assert " 5 " in row
    (only,) = stored_runs(one_dir)
    assert only.status == "completed" and only.metrics["count"] == 5 and only.batch_id


WIDE = """
id: wide
pipeline:
  - name: cli_grid
    options: {fail_on: ["2/a", "2/b", "3/b"]}
matrix:
  cli_grid.x: [1, 2, 3]
  cli_grid.y: [a, b]
"""


def test_the_summary_lists_at_most_rows_runs(tmp_path: Path, env: dict[str, str]) -> None:
    capped_dir = workdir(tmp_path, "capped", {"wide.yaml": WIDE})
    all_dir = workdir(tmp_path, "all", {"wide.yaml": WIDE})
    capped, every = cli_many(
        [(capped_dir, ["batch", "wide.yaml", "--rows", "2", "--exporter", "none"]),
         (all_dir, ["batch", "wide.yaml", "--rows", "0", "--exporter", "none"])],
        env,
    )  # fmt: skip
    for done in (capped, every):
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "3 completed, 3 failed (6 runs" in done.stdout
    listed = [r for r in stored_runs(capped_dir) if r.run_id[:8] in capped.stdout]
    assert len(listed) == 2
    assert "... 4 more runs not listed (--rows 0 lists all" in capped.stdout
    assert capped.stdout.count("grid point") == 2
    assert "... 1 more failures" in capped.stdout
    assert all(r.run_id[:8] in every.stdout for r in stored_runs(all_dir))
    assert every.stdout.count("grid point") == 3 and "not listed" not in every.stdout
    assert len(stored_runs(capped_dir)) == 6  # the cap is on the listing only


def test_bad_input_exits_2_and_runs_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    files = {
        "unknown.yaml": """
            id: u
            pipeline:
              - name: cli_grid
            matrix:
              cli_grid.x: [1]
              nowhere.x: [1, 2]
            """,
        "badpoint.yaml": """
            id: bp
            pipeline:
              - name: cli_grid
            matrix:
              cli_grid.x: [1, many]
              cli_grid.y: [a]
            """,
        "everywhere.yaml": """
            id: ev
            pipeline:
              - name: cli_grid
                options: {nonsense: 1}
            matrix:
              cli_grid.x: [1, 2]
            """,
        "grid.yaml": GRID,
    }
    cwd = workdir(tmp_path, "bad", files)
    results = cli_many(
        [
            (cwd, ["batch", "unknown.yaml"]),
            (cwd, ["batch", "badpoint.yaml", "--json"]),
            (cwd, ["batch", "everywhere.yaml"]),
            (cwd, ["batch", "grid.yaml", "--set", "cli_grid.y=oops"]),
            (cwd, ["batch", "grid.yaml", "--concurrency", "0"]),
            (cwd, ["batch", "grid.yaml", "--timeout", "0"]),
            (cwd, ["batch", "grid.yaml", "--exporter", "bogus"]),
        ],
        env,
    )
    expected = [
        ["unknown.yaml", "matrix names stages not in the pipeline: nowhere", "nothing was run"],
        [
            "badpoint.yaml: invalid pipeline in 1 of 2 matrix points; nothing was run",
            "badpoint.yaml [cli_grid.x=many, cli_grid.y=a]: pipeline[0] (cli_grid) options.x",
        ],
        ["everywhere.yaml [every matrix point]: pipeline[0] (cli_grid) options.nonsense"],
        [],  # --set on a matrix key: the matrix wins, so this one runs (checked below)
        ["--concurrency"],
        ["--timeout must be a positive number"],
        ["unknown exporter 'bogus'"],
    ]
    for res, needles in zip(results, expected, strict=True):
        if not needles:
            continue
        assert res.returncode == 2, (res.args, res.stdout, res.stderr)
        assert res.stdout == ""
        for needle in needles:
            assert needle in res.stderr, (res.args, needle, res.stderr)
        assert "Traceback" not in res.stderr
    assert "cli_grid.x=1, cli_grid.y=a]" not in results[1].stderr  # only the bad point is named
    overridden = results[3]
    assert overridden.returncode == 1 and "3 completed, 1 failed" in overridden.stdout
    assert "overridden by the matrix key 'cli_grid.y'" in overridden.stderr
    # only the --set run reached the store; the bad inputs stored nothing
    runs = stored_runs(cwd)
    assert len(runs) == 4 and {r.experiment_id for r in runs} == {"grid"}


@pytest.mark.parametrize(
    ("sig", "exit_code", "why"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_ctrl_c_or_sigterm_cancels_the_batch(
    tmp_path: Path, env: dict[str, str], sig: int, exit_code: int, why: str
) -> None:
    cwd = workdir(
        tmp_path,
        "slow",
        {"slow.yaml": "id: slow\npipeline:\n  - name: cli_grid\n  - name: cli_slow\n"
         "matrix:\n  cli_grid.x: [1, 2, 3]\n"},
    )  # fmt: skip
    code, _, err = interrupt_when_started(
        [sys.executable, "-m", "crucible", "batch", "slow.yaml", "--concurrency", "1"],
        cwd=cwd, env=env, marker=cwd / "started", sig=sig,
    )  # fmt: skip
    assert code == exit_code, err
    assert f"cancelled ({why}): 0 completed, 0 failed, 3 recorded as cancelled" in err
    runs = stored_runs(cwd)
    assert len(runs) == 3 and {r.status for r in runs} == {"cancelled"}
    assert len({r.batch_id for r in runs}) == 1


@pytest.mark.parametrize(
    ("sig", "exit_code", "why"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_an_interrupted_batch_still_writes_export_and_json_with_every_run(
    tmp_path: Path, env: dict[str, str], sig: int, exit_code: int, why: str
) -> None:
    cwd = workdir(
        tmp_path,
        "slow",
        {"slow.yaml": "id: slow\npipeline:\n  - name: cli_grid\n  - name: cli_slow\n"
         "matrix:\n  cli_grid.x: [1, 2, 3, 4]\n"},
    )  # fmt: skip
    code, out, err = interrupt_when_started(
        [sys.executable, "-m", "crucible", "batch", "slow.yaml", "--concurrency", "2",
         "--export", "ck.csv", "--json"],
        cwd=cwd, env=env, marker=cwd / "started", sig=sig,
    )  # fmt: skip
    assert code == exit_code, err
    stored = {r.run_id: r for r in stored_runs(cwd)}
    assert len(stored) == 4 and {r.status for r in stored.values()} == {"cancelled"}
    doc = json.loads(out)
    assert doc["cancelled"] == why and doc["total"] == 4 and doc["counts"]["cancelled"] == 4
    assert [r["index"] for r in doc["runs"]] == [0, 1, 2, 3]
    assert {r["run_id"] for r in doc["runs"]} == set(stored)
    assert [r["matrix"] for r in doc["runs"]] == [{"cli_grid.x": x} for x in (1, 2, 3, 4)]
    rows = list(csv.DictReader((cwd / "ck.csv").open(encoding="utf-8")))
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in doc["runs"]]
    assert {r["status"] for r in rows} == {"cancelled"}
    assert [r["matrix.cli_grid.x"] for r in rows] == ["1", "2", "3", "4"]
    assert "exported: " in err and "(4 runs)" in err
    # Runs cancelled mid-stage have their trace (the store's); the others never started.
    traced = {r.run_id: r.trace_id for r in stored.values() if r.trace_id}
    assert traced  # at least the one whose stage said it started
    assert {r["run_id"]: r["trace_id"] for r in doc["runs"] if r["trace_id"]} == traced
    assert {r["run_id"]: r["trace_id"] for r in rows if r["trace_id"]} == traced


def test_progress_bar_on_a_terminal(tmp_path: Path, env: dict[str, str]) -> None:
    cwd = workdir(tmp_path, "tty", {"grid.yaml": GRID})
    code, screen, err = run_on_pty(
        [sys.executable, "-m", "crucible", "batch", "grid.yaml", "--exporter", "none"],
        cwd=cwd,
        env=env,
        timeout_s=TIMEOUT_S,
    )
    assert code == 1, (screen, err)
    assert "batch grid" in screen and "4/4" in screen and "1 failed" in screen
    assert "progress: " not in screen  # the bar, not the plain lines
    assert "3 completed, 1 failed" in screen
