"""``python -m crucible.ui``: it refuses to start, with a message and exit code 2, when unsafe or
when the store cannot be opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each case starts a Python process


ENTRY_POINTS = [["-m", "crucible.ui"], ["-m", "crucible", "ui"]]  # module, and `crucible ui`


def start(
    *args: str, cwd: Path, entry: list[str] = ENTRY_POINTS[0]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *entry, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "without a token: pass --token or set CRUCIBLE_UI_TOKEN"),
        (["--jaeger-url", "javascript:alert(1)"], "the Jaeger URL must be http(s)"),
        (["--store", "postgresql://postgres@127.0.0.1:1/nothing"], "cannot open the run store"),
    ],
)
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=["module", "cli"])
def test_refuses_to_start(tmp_path: Path, args: list[str], message: str, entry: list[str]) -> None:
    done = start(*args, "--port", "1", cwd=tmp_path, entry=entry)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_the_charts_import_without_the_web_server_parts(tmp_path: Path) -> None:
    code = (
        "import sys, crucible.ui, crucible.ui.charts;"
        "loaded = {'starlette', 'jinja2', 'uvicorn'} & {m.split('.')[0] for m in sys.modules};"
        "print(sorted(loaded))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
