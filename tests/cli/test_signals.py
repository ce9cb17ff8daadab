"""``run_cancellable``: a cancellation that never ends, or its leftovers, cannot hang the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]

REPO = Path(__file__).resolve().parents[2]

STUCK = """
import asyncio, os, signal, sys
from crucible.cli import signals
signals.CANCEL_GRACE_S = signals.LEFTOVER_S = 0.5

async def stubborn():
    asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
    forever = asyncio.Event()
    while True:
        try:
            await forever.wait()  # ignores every cancellation, as a stuck cleanup would
        except asyncio.CancelledError:
            pass

try:
    signals.run_cancellable(stubborn())
except signals.Terminated:
    print("terminated", flush=True)
"""


def test_a_cancellation_that_never_ends_is_given_up_after_the_grace() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK], cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "terminated", done.stderr
    assert "did not finish within 0.5 s" in done.stderr
    assert time.monotonic() - started < 30
