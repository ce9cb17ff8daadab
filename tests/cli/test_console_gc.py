"""The console script tunes its own process's collector; importing Crucible never does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPORT = (
    "import gc, json, sys\n"
    "import crucible.cli.signals as s\n"
    "real = s.run_cancellable\n"
    "def spy(main):\n"
    "    try:\n"
    "        return real(main)\n"
    "    finally:\n"
    "        state = {'thresholds': gc.get_threshold(), 'frozen': gc.get_freeze_count()}\n"
    "        print(json.dumps(state), file=sys.stderr)\n"
    "s.run_cancellable = spy\n"
)


def _run(tmp_path: Path, entry: str, env: dict[str, str]) -> dict[str, object]:
    exp = tmp_path / "one.yaml"
    exp.write_text("id: one\npipeline:\n  - name: validate\n")
    code = (
        entry + REPORT
        + "import crucible.cli.run\n"
        + "crucible.cli.run.run_cancellable = spy\n"
        + "sys.argv = ['crucible', 'run', 'one.yaml', '--exporter', 'none']\n"
        + "from crucible.console import main\nmain()\n"
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("{")][-1]
    report: dict[str, object] = json.loads(line)
    return report


def test_console_script_collects_less_and_freezes_its_imports(tmp_path: Path) -> None:
    report = _run(tmp_path, "", {})
    assert report["thresholds"] == [20_000, 20, 20]
    assert isinstance(report["frozen"], int) and report["frozen"] > 10_000


def test_crucible_gc_default_keeps_pythons_collector(tmp_path: Path) -> None:
    defaults = "import gc\ngc.set_threshold(700, 10, 10)\n"
    report = _run(tmp_path, defaults, {"CRUCIBLE_GC": "default"})
    assert report["thresholds"] == [700, 10, 10]
    assert report["frozen"] == 0


def test_importing_crucible_leaves_the_callers_collector_alone() -> None:
    code = (
        "import gc\ngc.set_threshold(700, 10, 10)\n"
        "import crucible, crucible.cli, crucible.console, crucible.gcsettings\n"
        "import crucible.cli.signals\n"
        "print(gc.get_threshold(), gc.get_freeze_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    assert out.split() == ["(700,", "10,", "10)", "0"]
