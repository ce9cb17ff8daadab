"""Real uvicorn servers on 127.0.0.1 for tests: in a thread of this process, or as a subprocess."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from crucible.store import RunStore

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def serve(app: FastAPI, store: RunStore | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on an ephemeral 127.0.0.1 port in its own thread and loop."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say they are TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            if store is not None:
                await store.close()  # on the loop that used it

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during startup"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not shut down within 15 s"


@dataclass
class ServerProcess:
    """``uvicorn APP`` running as a subprocess; ``output`` holds what it printed so far."""

    proc: asyncio.subprocess.Process
    url: str
    output: list[str] = field(default_factory=list)

    async def wait_exit(self, within_s: float) -> int:
        """Read the rest of the output and wait for the exit code (killed after ``within_s``)."""
        assert self.proc.stdout is not None
        try:
            rest = await asyncio.wait_for(self.proc.stdout.read(), timeout=within_s)
            await asyncio.wait_for(self.proc.wait(), timeout=5)
        except TimeoutError:
            self.proc.kill()
            rest = await self.proc.stdout.read()
            await self.proc.wait()
        self.output.append(rest.decode(errors="replace"))
        assert self.proc.returncode is not None
        return self.proc.returncode

    def text(self) -> str:
        return "".join(self.output)


@asynccontextmanager
async def uvicorn_process(
    app: str, *args: str, env: Mapping[str, str], cwd: Path = REPO
) -> AsyncIterator[ServerProcess]:
    """Start ``uvicorn app`` on a free 127.0.0.1 port; yields once it listens, kills it at the end
    if the test has not stopped it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *args,
        cwd=cwd,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        port = None
        async with asyncio.timeout(30):
            while port is None:
                line = (await proc.stdout.readline()).decode(errors="replace")
                assert line, "uvicorn exited: " + "".join(output)
                output.append(line)
                found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
                port = int(found.group(1)) if found else None
        yield ServerProcess(proc, f"http://127.0.0.1:{port}", output)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
