"""The OTLP export child outlives no parent and dies of no signal meant for its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crucible.telemetry.offload import OffloadedOtlpExporter
from crucible.testing.otlp import OtlpHttpReceiver
from tests.telemetry.test_offload import finished_spans

pytestmark = [pytest.mark.otlp, pytest.mark.skipif(sys.platform != "linux", reason="/proc")]

REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_child_ignores_sigint_and_sigterm(capfd: pytest.CaptureFixture[str]) -> None:
    spans = finished_spans()
    with OtlpHttpReceiver() as receiver:
        exporter = OffloadedOtlpExporter("http/protobuf", receiver.traces_endpoint, 2.0)
        try:
            assert exporter.send([]) is True  # starts the child
            assert exporter._proc is not None
            pid = exporter._proc.pid
            for sig in (signal.SIGINT, signal.SIGTERM):
                os.kill(pid, sig)
            assert exporter.export(spans).name == "SUCCESS"
            receiver.wait_for_spans(2)
            assert exporter._proc is not None and exporter._proc.pid == pid
            assert exporter._proc.poll() is None
        finally:
            exporter.shutdown()
    err = capfd.readouterr().err
    assert "KeyboardInterrupt" not in err and "starting a new one" not in err, err


PARENT = """
import os, sys, time
from crucible.telemetry.offload import OffloadedOtlpExporter
exporter = OffloadedOtlpExporter("http/protobuf", sys.argv[1], 2.0)
assert exporter.send([])
holder = 0
if sys.argv[2] == "fork":  # a forked process keeps the child's pipe open after we die
    holder = os.fork()
    if holder == 0:
        time.sleep(60)
        os._exit(0)
print(exporter._proc.pid, holder, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("holder", ["none", "fork"])
def test_the_child_ends_soon_after_its_parent_is_killed(holder: str) -> None:
    with OtlpHttpReceiver() as receiver:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, receiver.traces_endpoint, holder],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            text=True,
        )
        forked = 0
        try:
            assert parent.stdout is not None
            child, forked = map(int, parent.stdout.readline().split())
            assert alive(child)
            parent.kill()
            parent.wait(timeout=10)
            assert wait_gone(child, 10.0), "the OTLP export child outlived its parent"
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait(timeout=10)
            if forked:
                os.kill(forked, signal.SIGKILL)
