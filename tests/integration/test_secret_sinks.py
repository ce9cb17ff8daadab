"""Secrets planted everywhere a user can put one never reach any sink, as raw values.

The secrets: an option under a secret key, a SecretStr option under an ordinary key, a
secret-named environment variable and (in-process) an assign under a secret key. Each stage
writes them into a log line, a span event, a metric, an output and an exception message.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import crucible
from crucible import logging as crucible_logging
from crucible.store import RunStore
from crucible.testing.otlp import OtlpHttpReceiver

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-live-0123456789abcdef"
CONN = "conn-secret-value-xyz"
ENV = "envsecret-987654321"
ASSIGNED = "assign-secret-4242"
SECRETS = (KEY, CONN, ENV, ASSIGNED)

PIPELINE = f"""
id: leaky
pipeline:
  - name: leak_everything
    module: tests.support.leak_stages:leak_everything
    options: {{api_key: "{KEY}", conn: "{CONN}", note: plain}}
  - name: report
  - name: leak_in_error
    module: tests.support.leak_stages:leak_in_error
    options: {{api_key: "{KEY}", conn: "{CONN}"}}
outputs:
  - name: summary
    formats: [markdown, json, html]
"""


def _raw(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _files_text(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_bytes().decode("utf-8", "replace")
            for p in root.rglob("*") if p.is_file()}  # fmt: skip


def test_cli_sinks_never_show_a_secret(tmp_path: Path) -> None:
    (tmp_path / "leaky.yaml").write_text(PIPELINE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
    env.update(PYTHONPATH=str(REPO), NO_COLOR="1", LEAKY_SERVICE_TOKEN=ENV)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "crucible", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    run = cli("run", "leaky.yaml", "--allow-imports", "--exporter", "file,console",
              "--json-logs")  # fmt: skip
    assert run.returncode == 1, run.stderr[-2000:]  # the last stage fails, by design
    assert "[REDACTED]" in run.stderr  # the log line and the error were there, scrubbed
    as_json = cli("run", "leaky.yaml", "--allow-imports", "--exporter", "none", "--json")
    batch = cli("batch", "leaky.yaml", "--allow-imports", "--exporter", "none",
                "--export", "runs.csv")  # fmt: skip
    bad_set = cli("run", "leaky.yaml", "--allow-imports", "--set",
                  f"leak_everything.api_key={{{KEY}")  # fmt: skip
    assert bad_set.returncode == 2 and "leak_everything.api_key=[REDACTED]" in bad_set.stderr
    listed = cli("runs", "list", "--json")
    run_id = json.loads(listed.stdout)[0]["run_id"]
    shown = cli("runs", "show", run_id, "--json")
    shown_text = cli("runs", "show", run_id)
    for name, done in [("run", run), ("run --json", as_json), ("batch", batch),
                       ("--set", bad_set), ("runs list", listed), ("runs show --json", shown),
                       ("runs show", shown_text)]:  # fmt: skip
        assert not _raw(done.stdout), (name, "stdout", done.stdout[-3000:])
        assert not _raw(done.stderr), (name, "stderr", done.stderr[-3000:])
    assert (tmp_path / "traces.jsonl").stat().st_size > 0
    assert len(list((tmp_path / "reports").rglob("*.*"))) == 9  # 3 formats x 3 runs
    assert "[REDACTED]" in (tmp_path / "runs.csv").read_text(encoding="utf-8")
    files = _files_text(tmp_path)  # traces.jsonl, reports, the SQLite database (and its WAL)
    assert any(name.endswith("runs.db") for name in files)
    leaks = {name: _raw(text) for name, text in files.items() if name != "leaky.yaml"}
    assert not {n: s for n, s in leaks.items() if s}


async def test_otlp_bytes_json_logs_and_postgres_never_hold_a_secret(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEAKY_SERVICE_TOKEN", ENV)
    logs = io.StringIO()
    crucible_logging.configure(json=True, stream=logs)
    receiver = OtlpHttpReceiver().start()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=receiver.traces_endpoint)))  # fmt: skip
    path = tmp_path / "leaky.yaml"
    path.write_text(PIPELINE.replace("  - name: report\n", ""), encoding="utf-8")
    exp = crucible.load_experiment(path)
    try:
        async with RunStore(pg_database) as store:
            with pytest.raises(crucible.StageFailed) as failed:
                await crucible.run(exp, assigns={"password": ASSIGNED}, store=store,
                                   tracer_provider=provider, allow_imports=True)  # fmt: skip
            run_id = failed.value.context.run_id if failed.value.context else None
        assert not _raw(str(failed.value)) and not _raw(repr(failed.value.cause))
        receiver.wait_for_spans(3)
        provider.force_flush()
        wire = b"".join(r.SerializeToString() for r in receiver.requests)
        assert wire and not [s for s in SECRETS if s.encode() in wire]
        assert "[REDACTED]" in logs.getvalue() and not _raw(logs.getvalue())
        conn = await asyncpg.connect(pg_database.replace("postgresql://", "postgres://"))
        try:
            for table in ("experiments", "runs", "stage_attempts", "artifacts"):
                rows = await conn.fetch(f"SELECT t::text AS row FROM {table} t")
                text = "\n".join(r["row"] for r in rows)
                assert not _raw(text), (table, text[:2000])
            assert await conn.fetchval("SELECT count(*) FROM runs WHERE id = $1", run_id) == 1
        finally:
            await conn.close()
    finally:
        receiver.stop()
