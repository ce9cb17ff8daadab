"""``crucible batch --executor ray`` joining the session's two-node cluster on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crucible.telemetry.jsonl import read_otlp_jsonl

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
    env.update(NO_COLOR="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONPATH=str(REPO))
    return env


def test_cli_batch_on_ray(ray_cluster: Any, tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples" / "data", tmp_path / "data")
    text = (REPO / "examples" / "quickstart.yaml").read_text(encoding="utf-8")
    (tmp_path / "sweep.yaml").write_text(
        text + "matrix:\n  bench.bootstrap_iterations: [200, 400, 800]\n", encoding="utf-8"
    )
    cmd = [sys.executable, "-m", "crucible", "batch", "sweep.yaml", "--executor", "ray",
           "--ray-address", ray_cluster.address, "--ray-actors", "2", "--json",
           "--exporter", "file", "--batch-id", "cli-ray"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=240, check=False)  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    doc = json.loads(done.stdout)
    assert doc["counts"]["completed"] == 3
    assert [r["matrix"] for r in doc["runs"]] == [
        {"bench.bootstrap_iterations": n} for n in (200, 400, 800)
    ]
    spans = read_otlp_jsonl(tmp_path / "traces.jsonl")
    batch = [s for s in spans if s["name"] == "BATCH quickstart"]
    runs = [s for s in spans if s["name"] == "RUN quickstart"]
    assert len(batch) == 1 and len(runs) == 3
    assert {r["parent_span_id"] for r in runs} == {batch[0]["span_id"]}
    assert all("cicd.worker.id" in r["attributes"] for r in runs)
    run_ids = {r["span_id"] for r in runs}
    assert len([s for s in spans if s["parent_span_id"] in run_ids]) == 18
    assert len(list((tmp_path / "reports").rglob("*.html"))) == 3  # written beside the driver


def test_cli_refuses_ray_options_without_ray_executor(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("id: one\npipeline:\n  - name: validate\n")
    cmd = [sys.executable, "-m", "crucible", "batch", "one.yaml", "--ray-actors", "3"]
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "--ray-actors needs --executor ray" in done.stderr
    assert not (tmp_path / ".crucible").exists()
