"""The ``crucible`` command, driven as a subprocess from a temporary working directory."""

from __future__ import annotations

import asyncio
import json
import os
import re
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
from tests.support.cli_proc import interrupt_when_started, run_on_pty

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake installed distribution declaring the test stages as ``crucible.stages`` plugins."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "crucible_cli_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: crucible-cli-test-plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[crucible.stages]\n"
        "cli_ok = tests.support.cli_stages:ok_stage\n"
        "cli_fail = tests.support.cli_stages:fail_stage\n"
        "cli_needs = tests.support.cli_stages:needs_stage\n",
        encoding="utf-8",
    )
    return site


@pytest.fixture(scope="module")
def env(plugin_dir: Path) -> dict[str, str]:
    """The subprocess environment: repo root and plugin on the path, no OTEL/CRUCIBLE settings."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "CRUCIBLE_"))
        and k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), str(plugin_dir)])
    base["NO_COLOR"] = "1"
    return base


def cli(
    cwd: Path, *args: str, env: Mapping[str, str], extra_env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crucible", *args],
        cwd=cwd,
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def cli_many(
    cwd: Path, calls: Sequence[Sequence[str]], env: Mapping[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent invocations at once (each is a separate process)."""
    with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
        return list(pool.map(lambda args: cli(cwd, *args, env=env), calls))


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def stored(cwd: Path, run_id: str | None = None) -> tuple[int, RunInfo | None]:
    """(number of runs, the run ``run_id``) in the default store under ``cwd``."""

    async def read() -> tuple[int, RunInfo | None]:
        async with RunStore(cwd / ".crucible" / "runs.db") as store:
            count = await store.count_runs()
            return count, (await store.get_run(run_id) if run_id else None)

    return asyncio.run(read())


def test_run_success_is_printed_stored_and_traced(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path / "exp.yaml",
        """
        id: exp-ok
        pipeline:
          - name: first
            module: tests.support.cli_stages:ok_stage
          - name: skipped
            module: tests.support.cli_stages:fail_stage
            enabled: false
        """,
    )
    res = cli(
        tmp_path, "run", "exp.yaml", "--allow-imports", "--run-id", "r-ok",
        "--set", "first.count=3", "--set", "first.fields=[input,output]",
        "--set", "first.label=from cli", env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "stage first ... success" in out
    assert "stage skipped ... skip" in out
    assert "run r-ok completed" in out
    # the metrics table, with the --set values and nested keys flattened
    assert "count" in out and " 3 " in out
    assert '["input", "output"]' in out
    assert '"from cli"' in out
    assert "nested.inner.depth" in out and "nested.flag" in out
    assert "cli_report: out/r-ok.txt (text)" in out
    assert f"trace:    {tmp_path / 'traces.jsonl'}" in out
    trace_line = next(line for line in out.splitlines() if line.startswith("trace id:"))
    trace_id = trace_line.split()[-1]
    assert len(trace_id) == 32
    assert f"jaeger:   http://localhost:16686/trace/{trace_id}" in out

    count, info = stored(tmp_path, "r-ok")
    assert count == 1 and info is not None
    assert info.status == "completed"
    assert info.trace_id == trace_id
    assert info.metrics["count"] == 3 and info.metrics["fields"] == ["input", "output"]
    assert [a.name for a in info.artifacts] == ["cli_report"]

    spans = read_otlp_jsonl(tmp_path / "traces.jsonl")
    run_span = next(s for s in spans if s["name"] == "RUN exp-ok")
    assert run_span["trace_id"] == trace_id
    stage_spans = [s for s in spans if s["name"] == "stage first"]
    assert stage_spans and stage_spans[0]["parent_span_id"] == run_span["span_id"]
    assert stage_spans[0]["attributes"]["cicd.pipeline.task.run.url.full"] == (
        f"http://localhost:16686/trace/{trace_id}?uiFind={stage_spans[0]['span_id']}"
    )

    listed, listed_json, shown, shown_json, unknown, filtered = cli_many(
        tmp_path,
        [
            ["runs", "list"],
            ["runs", "list", "--json", "--jaeger-url", "http://jaeger:16686/"],
            ["runs", "show", "r-ok"],
            ["runs", "show", "r-ok", "--json"],
            ["runs", "show", "nope"],
            ["runs", "list", "--status", "failed"],
        ],
        env,
    )
    assert listed.returncode == 0, listed.stderr
    assert "r-ok" in listed.stdout and "completed" in listed.stdout
    assert trace_id in listed.stdout
    rows = json.loads(listed_json.stdout)
    assert [r["run_id"] for r in rows] == ["r-ok"]
    assert rows[0]["jaeger_url"] == f"http://jaeger:16686/trace/{trace_id}"
    assert "attempts" not in rows[0] and "artifacts" not in rows[0]  # `runs show` has them
    assert shown.returncode == 0, shown.stderr
    for text in ("status:     completed", "first", "success", "cli_report", "out/r-ok.txt"):
        assert text in shown.stdout
    detail = json.loads(shown_json.stdout)
    assert [(a["stage"], a["result"]) for a in detail["attempts"]] == [
        ("first", "success"),
        ("skipped", "skip"),
    ]
    assert unknown.returncode == 2 and "unknown run id 'nope'" in unknown.stderr
    assert filtered.returncode == 0 and "no runs recorded" in filtered.stdout


def test_failing_stage_exits_1_and_is_stored_failed(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path / "exp.yaml",
        """
        id: exp-fail
        pipeline:
          - name: cli_ok
            options: {count: 7}
          - name: cli_fail
        """,
    )
    # plugin stages by name: no --allow-imports needed; the --exporter flag beats the env var
    res = cli(
        tmp_path, "run", "exp.yaml", "--run-id", "r-fail", "--exporter", "none", "--json-logs",
        env=env, extra_env={"OTEL_TRACES_EXPORTER": "file"},
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    logs = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    failed_log = next(entry for entry in logs if entry["event"] == "stage failed")
    assert failed_log["stage"] == "cli_fail" and failed_log["run_id"] == "r-fail"
    assert len(failed_log["trace_id"]) == 32
    assert "stage 'cli_fail' ended with failure: ValueError: boom" in res.stderr
    assert "stage cli_fail ... failure" in res.stdout
    assert "last good metrics" in res.stdout and " 7 " in res.stdout
    assert "not exported" in res.stdout
    assert not (tmp_path / "traces.jsonl").exists()
    _, info = stored(tmp_path, "r-fail")
    assert info is not None
    assert info.status == "failed"
    assert (info.failure_stage, info.error_type) == ("cli_fail", "ValueError")
    assert info.metrics["count"] == 7


def test_bad_input_exits_2_and_runs_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    write(tmp_path / "bad.yaml", "id: x\nowner: a: b\n")
    write(tmp_path / "unknown.yaml", "id: x\npipeline:\n  - name: no_such_stage\n")
    write(
        tmp_path / "badopt.yaml", "id: x\npipeline:\n  - name: cli_ok\n    options: {count: many}\n"
    )
    write(tmp_path / "missing.yaml", "id: x\npipeline:\n  - name: cli_needs\n")
    write(
        tmp_path / "imports.yaml",
        "id: x\npipeline:\n  - name: a\n    module: tests.support.cli_stages:ok_stage\n",
    )
    write(tmp_path / "boom_module.py", "raise RuntimeError('broken plugin')\n")
    write(tmp_path / "boom.yaml", "id: x\npipeline:\n  - name: a\n    module: boom_module:x\n")
    write(tmp_path / "twice.yaml", "id: x\npipeline:\n  - name: cli_ok\n  - name: cli_ok\n")
    results = cli_many(
        tmp_path,
        [
            ["run", "bad.yaml"],
            ["run", "unknown.yaml"],
            ["run", "badopt.yaml"],
            ["run", "missing.yaml"],
            ["run", "imports.yaml"],
            ["run", "twice.yaml", "--set", "cli_ok.count"],
            ["run", "twice.yaml", "--set", "count=3"],
            ["run", "twice.yaml", "--set", "other.count=3"],
            ["validate", "twice.yaml", "--set", "cli_ok.count=abc"],
            ["run", "twice.yaml", "--exporter", "bogus"],
            ["run", "absent.yaml"],
            ["run", "twice.yaml", "--timeout", "nan"],
            ["run", "twice.yaml", "--run-id", ""],
            ["run", "twice.yaml", "--run-id", "r" * 256],
            ["validate", "twice.yaml", "--set", "cli_ok.count=2"],
            ["validate", "imports.yaml", "--allow-imports"],
            ["run", "boom.yaml", "--allow-imports"],
            ["--debug", "validate", "boom.yaml", "--allow-imports"],
        ],
        env,
    )
    expected = [
        ["bad.yaml", "line 2, column", "invalid YAML"],
        ["unknown.yaml", "no_such_stage", "nothing was run"],
        ["badopt.yaml", "pipeline[0] (cli_ok) options.count"],
        ["pipeline[0] (cli_needs) options.threshold", "Field required"],
        ["allow_imports", "--allow-imports"],
        ["STAGE.OPTION=VALUE"],
        ["STAGE.OPTION=VALUE"],
        ["no stage named 'other'", "cli_ok"],
        ["pipeline[0] (cli_ok) options.count", "pipeline[1] (cli_ok) options.count"],
        ["unknown exporter 'bogus'"],
        ["absent.yaml", "file not found"],
        ["--timeout must be a positive number of seconds, got nan"],
        ["--run-id must be 1 to 255 characters, got 0"],
        ["--run-id must be 1 to 255 characters, got 256"],
    ]
    for res, needles in zip(results, expected, strict=False):
        assert res.returncode == 2, (res.args, res.stdout, res.stderr)
        for needle in needles:
            assert needle in res.stderr, (res.args, needle, res.stderr)
        assert "Traceback" not in res.stderr
    ok_twice, ok_imports, boom, boom_debug = results[-4:]
    assert ok_twice.returncode == 0 and "ok: 2 stages" in ok_twice.stdout
    assert ok_imports.returncode == 0 and "ok: 1 stage " in ok_imports.stdout
    # an unexpected exception: exit 1, a short message; the traceback only with --debug
    assert boom.returncode == 1 and "unexpected RuntimeError: broken plugin" in boom.stderr
    assert "Traceback" not in boom.stderr and "--debug" in boom.stderr
    assert boom_debug.returncode == 1 and "Traceback" in boom_debug.stderr
    # nothing ran: no store, no trace file
    assert not (tmp_path / ".crucible").exists()
    assert not (tmp_path / "traces.jsonl").exists()


def test_stages_listing_detail_json_and_unknown(tmp_path: Path, env: dict[str, str]) -> None:
    listing, detail, as_json, unknown, bare = cli_many(
        tmp_path,
        [
            ["stages"],
            ["stages", "--name", "cli_needs"],
            ["stages", "--json"],
            ["stages", "-n", "x"],
            [],
        ],
        env,
    )
    assert bare.returncode == 0 and "Usage" in bare.stdout and "runs" in bare.stdout
    assert listing.returncode == 0, listing.stderr
    out = listing.stdout
    assert out.startswith("Available stages:")
    origin = "entry point tests.support.cli_stages:ok_stage, crucible-cli-test-plugin 0.1"
    assert re.search(r"^cli_ok +" + re.escape(origin) + "$", out, re.MULTILINE), out
    assert "Description: Record its options as metrics" in out
    assert "count (integer, default 1)" in out and "fields (list[string], default [])" in out
    assert "Required: threshold (float)" in out
    names = [line.split()[0] for line in out.splitlines() if line and not line[0].isspace()]
    assert names[1:] == sorted(names[1:]) and {"cli_fail", "cli_ok", "cli_needs"} <= set(names)

    assert detail.returncode == 0, detail.stderr
    assert "Stage: cli_needs" in detail.stdout and "Schema version: 1.0" in detail.stdout
    assert "Required options:" in detail.stdout and "Required threshold." in detail.stdout
    assert "Optional options: (none)" in detail.stdout
    assert (
        "Origin: entry point tests.support.cli_stages:needs_stage, crucible-cli-test-plugin 0.1"
        in detail.stdout
    )

    schemas = {s["name"]: s for s in json.loads(as_json.stdout)}
    assert schemas["cli_ok"]["defaults"]["count"] == 1
    assert schemas["cli_ok"]["origin"] == origin
    assert schemas["report"]["origin"].startswith("entry point stages.report:report, crucible-")
    assert schemas["cli_needs"]["required"] == ["threshold"]

    assert unknown.returncode == 2
    assert "unknown stage 'x'" in unknown.stderr and "cli_ok" in unknown.stderr


def test_stages_shows_a_plugin_shadowing_a_built_in(tmp_path: Path, env: dict[str, str]) -> None:
    site = tmp_path / "site"
    dist = site / "shadow_plugin-2.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow-plugin\nVersion: 2.0\n")
    (dist / "entry_points.txt").write_text(
        "[crucible.stages]\nreport = tests.support.cli_stages:ok_stage\n"
    )
    shadowed = {**env, "PYTHONPATH": os.pathsep.join([str(site), env["PYTHONPATH"]])}
    listing = cli(tmp_path, "stages", env=shadowed)
    assert listing.returncode == 0, listing.stderr
    # The plugin comes first on the path, so it provides 'report'; both sources are named.
    assert (
        "stage 'report' from entry point tests.support.cli_stages shadows 'report' from "
        "entry point stages.report" in listing.stderr
    )
    origin = "entry point tests.support.cli_stages:ok_stage, shadow-plugin 2.0"
    assert re.search(r"^report +" + re.escape(origin) + "$", listing.stdout, re.MULTILINE)
    plain = cli(tmp_path, "stages", env=env)  # without the plugin: no warning at all
    assert plain.returncode == 0 and "shadows" not in plain.stderr, plain.stderr


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_cancels_the_run(
    tmp_path: Path, env: dict[str, str], sig: int, exit_code: int
) -> None:
    write(
        tmp_path / "slow.yaml",
        "id: slow\npipeline:\n  - name: slow\n    module: tests.support.cli_stages:slow_stage\n",
    )
    code, out, err = interrupt_when_started(
        [sys.executable, "-m", "crucible", "run", "slow.yaml", "--allow-imports"],
        cwd=tmp_path, env=env, marker=tmp_path / "started", sig=sig,
    )  # fmt: skip
    assert code == exit_code, (out, err)
    assert "cancelled" in err
    count, _ = stored(tmp_path)
    assert count == 1
    runs_json = cli(tmp_path, "runs", "list", "--json", env=env)
    (run,) = json.loads(runs_json.stdout)
    assert run["status"] == "cancelled"
    assert run["trace_id"]
    shown = json.loads(cli(tmp_path, "runs", "show", run["run_id"], "--json", env=env).stdout)
    assert [(a["stage"], a["result"]) for a in shown["attempts"]] == [("slow", "cancellation")]
    # The run and the in-flight stage span were flushed to traces.jsonl before exiting.
    spans = {s["name"]: s for s in read_otlp_jsonl(tmp_path / "traces.jsonl")}
    assert spans["RUN slow"]["attributes"]["cicd.pipeline.result"] == "cancellation"
    assert spans["stage slow"]["attributes"]["cicd.pipeline.task.run.result"] == "cancellation"
    assert spans["RUN slow"]["trace_id"] == run["trace_id"]


def test_live_display_on_a_terminal(tmp_path: Path, env: dict[str, str]) -> None:
    write(tmp_path / "exp.yaml", "id: tty\npipeline:\n  - name: cli_ok\n")
    code, text, err = run_on_pty(
        [sys.executable, "-m", "crucible", "run", "exp.yaml"],
        cwd=tmp_path,
        env=env,
        timeout_s=RUN_TIMEOUT_S,
    )
    assert code == 0, (text, err)
    assert "cli_ok" in text and "success" in text
    assert "stage cli_ok ..." not in text  # the table, not the plain lines
    assert "run " in text and "completed" in text


def test_records_the_database_could_not_take_are_journaled_and_reported(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(
        tmp_path / "gone.yaml",
        "id: gone\npipeline:\n  - name: vanish\n"
        "    module: tests.support.cli_stages:vanish_stage\n",
    )
    res = cli(tmp_path, "run", "gone.yaml", "--allow-imports", "--run-id", "r-gone", env=env)
    assert res.returncode == 0, res.stderr
    assert "wait in the journal at" in res.stderr and str(tmp_path / ".crucible") in res.stderr
    journal = tmp_path / ".crucible" / "journal"
    lines = [line for f in journal.iterdir() for line in f.read_text().splitlines() if line]
    assert any("r-gone" in line for line in lines)  # the run's final record, kept, not lost


def test_run_of_a_matrix_file_says_it_runs_once(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path / "grid.yaml",
        "id: g\npipeline:\n  - name: cli_ok\nmatrix:\n  cli_ok.count: [1, 2]\n",
    )
    res = cli(tmp_path, "run", "grid.yaml", "--exporter", "none", env=env)
    assert res.returncode == 0, res.stderr
    assert "does not expand the file's matrix" in res.stderr
    assert "crucible batch grid.yaml runs every point" in res.stderr
    assert stored(tmp_path)[0] == 1


def test_a_set_that_the_matrix_overrides_is_warned_of(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path / "grid.yaml",
        "id: g\npipeline:\n  - name: cli_ok\nmatrix:\n  cli_ok.count: [1, 2]\n",
    )
    checked, ran = cli_many(
        tmp_path,
        [
            ["validate", "grid.yaml", "--set", "cli_ok.count=5"],
            ["batch", "grid.yaml", "--set", "cli_ok.count=5", "--exporter", "none"],
        ],
        env,
    )
    for res in (checked, ran):
        assert res.returncode == 0, res.stderr
        assert "--set 'cli_ok.count=5' is overridden by the matrix key 'cli_ok.count'" in res.stderr
