"""What a newcomer meets first: ``--version``, choices in ``--help``, where spans and links go."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crucible.status import RunStatus

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60
OK_STAGE = "tests.support.cli_stages:ok_stage"
ONE_STAGE = f"id: opts\npipeline:\n  - name: first\n    module: {OK_STAGE}\n"
GRID = ONE_STAGE.replace("id: opts", "id: grid") + "matrix:\n  first.count: [1, 2]\n"


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The repo on the path, no OTEL/CRUCIBLE settings, and wide help so choices are not wrapped."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "CRUCIBLE_"))
        and k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    return {**base, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}


def cli_many(
    calls: Sequence[tuple[Path, Sequence[str]]], env: Mapping[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent ``python -m crucible`` invocations at once, each in its own process."""

    def one(call: tuple[Path, Sequence[str]]) -> subprocess.CompletedProcess[str]:
        cwd, args = call
        return subprocess.run(
            [sys.executable, "-m", "crucible", *args],
            cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
        return list(pool.map(one, calls))


def workdir(root: Path, name: str, files: Mapping[str, str]) -> Path:
    """A fresh working directory (so each run has its own store and trace file)."""
    path = root / name
    path.mkdir()
    for file, text in files.items():
        (path / file).write_text(text, encoding="utf-8")
    return path


def option_line(help_text: str, option: str) -> str:
    return next(line for line in help_text.splitlines() if f" {option} " in line)


def test_version_and_choices_in_help(tmp_path: Path, env: dict[str, str]) -> None:
    calls = [["--version"], ["--help"], ["run", "--help"], ["batch", "--help"],
             ["runs", "list", "--help"]]  # fmt: skip
    version, root_help, run_help, batch_help, list_help = cli_many(
        [(tmp_path, args) for args in calls], env
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"crucible {importlib.metadata.version('crucible-pipelines')}\n"
    assert root_help.returncode == 0 and "--version" in root_help.stdout
    assert "<debug|info|warning|error>" in option_line(root_help.stdout, "--log-level")
    for res in (run_help, batch_help):
        assert res.returncode == 0, res.stderr
        assert "<otlp|console|file|none>" in option_line(res.stdout, "--exporter")
    statuses = "<" + "|".join(s.value for s in RunStatus) + ">"
    assert statuses in option_line(list_help.stdout, "--status")
    assert "<str>" not in option_line(list_help.stdout, "--status")
    # every command says what it does; flags show no value type (they take none)
    commands = root_help.stdout.split("Commands", 1)[1]
    for name in ("run", "batch", "validate", "stages", "ui", "runs"):
        line = next(ln for ln in commands.splitlines() if ln.strip("│ ").startswith(name + " "))
        assert len(line.strip("│ ").split(None, 1)[1]) > 10, line
    for flag in ("--debug", "--version"):
        assert "<bool>" not in option_line(root_help.stdout, flag)
    for flag in ("--json", "--json-logs", "--allow-imports", "--checkpoint"):
        assert "<bool>" not in option_line(run_help.stdout, flag)
        assert "<bool>" not in option_line(batch_help.stdout, flag)


def test_bad_choices_exit_2_naming_the_choices(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "exp.yaml").write_text(ONE_STAGE, encoding="utf-8")
    calls = [
        ["run", "exp.yaml", "--exporter", "jaeger"],
        ["batch", "exp.yaml", "--exporter", "file,jaeger"],
        ["--log-level", "loud", "stages"],
        ["runs", "list", "--status", "done"],
    ]
    results = cli_many([(tmp_path, args) for args in calls], env)
    expected = [
        ["unknown exporter 'jaeger'", "otlp, console, file, none"],
        ["unknown exporter 'jaeger'", "otlp, console, file, none"],
        ["'loud'", "'debug'", "'info'", "'warning'", "'error'"],
        ["'done'", *(f"'{s.value}'" for s in RunStatus)],
    ]
    for res, needles in zip(results, expected, strict=True):
        assert res.returncode == 2, (res.args, res.stdout, res.stderr)
        assert res.stdout == ""
        for needle in needles:
            assert needle in res.stderr, (res.args, needle, res.stderr)
    assert not (tmp_path / ".crucible").exists()  # nothing ran


def test_jaeger_link_only_when_spans_were_exported(tmp_path: Path, env: dict[str, str]) -> None:
    files = {"exp.yaml": ONE_STAGE, "grid.yaml": GRID}
    dirs = [workdir(tmp_path, name, files) for name in ("a", "b", "c", "d", "e")]
    none_run, file_run, none_batch, none_batch_json, file_batch = cli_many(
        [
            (dirs[0], ["run", "exp.yaml", "--allow-imports", "--exporter", "none",
                       "--run-id", "r-none"]),
            (dirs[1], ["run", "exp.yaml", "--allow-imports", "--exporter", "file"]),
            (dirs[2], ["batch", "grid.yaml", "--allow-imports", "--exporter", "none"]),
            (dirs[3], ["batch", "grid.yaml", "--allow-imports", "--exporter", "none", "--json"]),
            (dirs[4], ["batch", "grid.yaml", "--allow-imports"]),
        ],
        env,
    )  # fmt: skip
    for res in (none_run, file_run, none_batch, none_batch_json, file_batch):
        assert res.returncode == 0, (res.args, res.stdout, res.stderr)

    assert "not exported (exporter none)" in none_run.stdout
    assert "trace id: " in none_run.stdout and "jaeger:" not in none_run.stdout
    file_trace = next(ln for ln in file_run.stdout.splitlines() if ln.startswith("trace id:"))
    trace_id = file_trace.split()[-1]
    assert f"jaeger:   http://localhost:16686/trace/{trace_id}" in file_run.stdout

    assert "trace id: " in none_batch.stdout and "jaeger:" not in none_batch.stdout
    doc = json.loads(none_batch_json.stdout)
    assert len(doc["trace"]["trace_id"]) == 32 and doc["trace"]["jaeger_url"] is None
    batch_trace = next(ln for ln in file_batch.stdout.splitlines() if ln.startswith("trace id:"))
    link = f"jaeger:   http://localhost:16686/trace/{batch_trace.split()[2]}"
    assert link in file_batch.stdout

    # the store remembers that r-none exported nothing: no Jaeger link; --status filters
    listed, shown, only_completed, only_failed = cli_many(
        [
            (dirs[0], ["runs", "list", "--json"]),
            (dirs[0], ["runs", "show", "r-none"]),
            (dirs[0], ["runs", "list", "--status", "completed", "--json"]),
            (dirs[0], ["runs", "list", "--status", "failed"]),
        ],
        env,
    )
    (row,) = json.loads(listed.stdout)
    assert row["trace_exported"] is False and row["jaeger_url"] is None
    assert len(row["trace_id"]) == 32 and "jaeger:     -" in shown.stdout
    assert [r["run_id"] for r in json.loads(only_completed.stdout)] == ["r-none"]
    assert only_failed.returncode == 0 and "no runs recorded" in only_failed.stdout


def test_console_exporter_keeps_stdout_free_of_spans(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "exp.yaml").write_text(ONE_STAGE, encoding="utf-8")
    (res,) = cli_many(
        [(tmp_path, ["run", "exp.yaml", "--allow-imports", "--exporter", "console"])], env
    )
    assert res.returncode == 0, res.stderr
    assert "run " in res.stdout and "completed" in res.stdout
    assert "trace:    console" in res.stdout
    assert '"trace_id"' not in res.stdout and '"name": "RUN opts"' not in res.stdout
    assert '"name": "RUN opts"' in res.stderr and '"name": "stage first"' in res.stderr
    trace_id = next(ln for ln in res.stdout.splitlines() if ln.startswith("trace id:")).split()[-1]
    assert trace_id != "-"
    assert "jaeger:" not in res.stdout  # the terminal is not Jaeger: no link to a missing trace
