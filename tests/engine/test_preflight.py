"""Plugin discovery and stage imports happen in pre-flight, before the run span starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import sys
    import anyio
    import crucible
    from crucible.observers import RunObserver
    from crucible.testing import capture_spans

    class Probe(RunObserver):
        def on_run_start(self, *, run):
            self.loaded = sorted(m for m in sys.modules if m.startswith("stages."))

    async def main():
        probe = Probe()
        exp = crucible.Experiment(id="p", pipeline=[
            {"name": "load_examples", "options": {"path": sys.argv[1]}},
            {"name": "bench", "options": {"tests": ["ttest"]}},
        ])
        assert not any(m.startswith("stages.") for m in sys.modules), "imported too early"
        with capture_spans() as cap:
            await crucible.run(exp, observers=[probe], tracer_provider=cap.provider)
        print(" ".join(probe.loaded))

    anyio.run(main)
    """
)


def test_stage_modules_are_imported_before_the_run_span(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "a", "score": 1}\n', encoding="utf-8")
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(data)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert "stages.dataset" in loaded and "stages.bench" in loaded
