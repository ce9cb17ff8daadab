"""Drive the CLI as a user does: on a pseudo-terminal, or stopped by Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_on_pty(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float = 60.0
) -> tuple[int, str, str]:
    """(exit code, screen text, stderr) of ``args`` run with stdout on a terminal."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        list(args),
        cwd=cwd,
        env={**env, "TERM": "xterm", "COLUMNS": "160", "LINES": "40"},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=30)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace"), stderr


def interrupt_when_started(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    marker: Path,
    sig: int = signal.SIGINT,
) -> tuple[int, str, str]:
    """Start ``args``, send ``sig`` once ``marker`` exists; (exit code, stdout, stderr)."""
    proc = subprocess.Popen(
        list(args), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow stage never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err
