"""The Jaeger link is offered only where Jaeger can show the trace."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENT = """\
id: linked
pipeline:
  - name: validate
"""


def _crucible(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-m", "crucible", "run", "exp.yaml", "--store", "runs.db", *args],
        cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


@pytest.mark.parametrize(("exporter", "linked"), [("file", True), ("console", False)])
def test_a_link_only_when_spans_go_where_jaeger_reads(
    tmp_path: Path, exporter: str, linked: bool
) -> None:
    proc = _crucible(tmp_path, "--exporter", exporter)
    assert proc.returncode == 0, proc.stderr
    assert ("jaeger:" in proc.stdout) is linked


def test_an_export_that_reached_nothing_says_the_link_shows_nothing(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    proc = _crucible(
        tmp_path, "--exporter", "otlp", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "spans were not exported" in proc.stderr
    assert "no span was exported, so the trace's Jaeger link shows nothing" in proc.stderr
