"""``crucible batch --exporter otlp`` stopped by Ctrl-C or SIGTERM sent to its process group.

A terminal and systemd signal the whole group: the OTLP export child too. Every span of the
stored runs must still reach a real receiver, and with the receiver gone the command must still
exit within a bounded time.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from crucible.store import RunStore
from crucible.testing.otlp import OtlpHttpReceiver
from tests.support.outages import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.otlp, pytest.mark.skipif(
    sys.platform == "win32", reason="process groups")]  # fmt: skip

REPO = Path(__file__).resolve().parents[2]
POINTS = 400  # at 50 ms a run, two at once: ten seconds, far longer than any test waits
BIG = "id: big\npipeline:\n  - name: cli_grid\nmatrix:\n  cli_grid.x: [{}]\n".format(
    ", ".join(map(str, range(POINTS)))
)
NOT_EXPORTED = re.compile(r"(\d+) of (\d+) spans were not exported")


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    dist = tmp_path / "site" / "crucible_otlp_signal_test-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: otlp-signal-test\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[crucible.stages]\ncli_grid = tests.support.cli_stages:grid_stage\n"
    )
    (tmp_path / "big.yaml").write_text(BIG)
    return tmp_path


class Batch:
    """``crucible batch big.yaml`` in a process group of its own, its stderr read as it comes."""

    def __init__(self, cwd: Path, endpoint: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
        env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(cwd / "site")]), NO_COLOR="1",
                   OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crucible", "batch", "big.yaml", "--concurrency", "2",
             "--exporter", "otlp"],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def all_stderr(self) -> str:
        """Everything, once the export child (which shares the pipe) has exited too."""
        self._reader.join(timeout=30)
        return self.stderr

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextmanager
def batch(cwd: Path, endpoint: str) -> Iterator[Batch]:
    run = Batch(cwd, endpoint)
    try:
        yield run
    finally:
        run.kill()


def poll(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stored_span_ids(cwd: Path) -> tuple[set[str], int]:
    """The span ids the store has (run spans and stage attempts), and how many runs started."""

    async def read() -> tuple[set[str], int]:
        ids: set[str] = set()
        started = 0
        async with RunStore(cwd / ".crucible" / "runs.db") as store:
            for listed in await store.list_runs(limit=10 * POINTS):
                run = await store.get_run(listed.run_id)
                assert run is not None
                if run.span_id is not None:
                    started += 1
                    ids.add(run.span_id)
                ids.update(a.span_id for a in run.attempts if a.span_id is not None)
        return ids, started

    return asyncio.run(read())


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_every_stored_span_is_exported_when_the_group_is_signalled(
    cwd: Path, sig: int, code: int
) -> None:
    with OtlpHttpReceiver() as receiver, batch(cwd, receiver.endpoint) as run:
        poll(lambda: len(receiver.spans()) >= 10, "the first spans")
        run.signal_group(sig)
        assert run.wait(60) == code, run.stderr
        received = {s.span_id for s in receiver.spans()}
    err = run.all_stderr()
    assert "recorded as cancelled" in err, err
    for bad in ("Traceback", "not exported", "starting a new one", "did not finish"):
        assert bad not in err, err
    stored, started = stored_span_ids(cwd)
    assert 0 < started < POINTS
    missing = stored - received
    assert not missing, f"{len(missing)} of {len(stored)} stored spans never arrived"


def test_sigterm_with_the_receiver_gone_exits_in_bounded_time(cwd: Path) -> None:
    with OtlpHttpReceiver() as receiver:
        proxy = TcpProxy("127.0.0.1", receiver.port)
        try:
            proxy.start()
            with batch(cwd, f"http://127.0.0.1:{proxy.port}") as run:
                poll(lambda: len(receiver.spans()) >= 10, "the first spans")
                proxy.stop()  # listener and every connection: the receiver is gone
                run.signal_group(signal.SIGTERM)
                started = time.monotonic()
                assert run.wait(60) == 143, run.stderr
                took = time.monotonic() - started
        finally:
            proxy.close()
        received = len(receiver.spans())
    err = run.all_stderr()
    assert "Traceback" not in err, err
    # the flush is bounded (5 s) and the cancellation quick; far below the 60 s grace
    assert took < 30, (took, err)
    lost = NOT_EXPORTED.search(err)
    assert lost is not None, err
    not_exported, ended = map(int, lost.groups())
    assert not_exported > 0  # the cancelled runs' spans ended after the receiver went away
    assert ended - not_exported <= received  # nothing reported exported that never arrived


def test_a_second_signal_while_stopping_exits_at_once(cwd: Path) -> None:
    with OtlpHttpReceiver() as receiver, batch(cwd, receiver.endpoint) as run:
        poll(lambda: len(receiver.spans()) >= 10, "the first spans")
        receiver.delay_s = 30.0  # exports now hang: the flush at exit waits for them
        run.signal_group(signal.SIGTERM)
        poll(lambda: "recorded as cancelled" in run.stderr, "the cancelled summary")
        run.signal_group(signal.SIGTERM)
        started = time.monotonic()
        assert run.wait(30) == 143, run.stderr
        took = time.monotonic() - started
    err = run.all_stderr()
    assert "SIGTERM while stopping: exiting now" in err, err
    assert "Traceback" not in err, err
    assert took < 3, (took, err)
