"""RotelHop: the rotel collector as a real middle hop between an exporter and a receiver."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self

from crucible.testing.otlp.grpc_receiver import OtlpGrpcReceiver
from crucible.testing.otlp.http_receiver import OtlpHttpReceiver
from crucible.testing.otlp.service import HOST, LocalService, url

__all__ = ["RotelHop", "rotel_available", "rotel_binary"]


def rotel_binary() -> Path | None:
    """Locate the rotel collector executable: $CRUCIBLE_ROTEL_BIN, the ``rotel`` package, PATH."""
    override = os.environ.get("CRUCIBLE_ROTEL_BIN")
    if override:
        path = Path(override)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    try:
        spec = importlib.util.find_spec("rotel")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "rotel-agent"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("rotel-agent") or shutil.which("rotel")
    return Path(found) if found else None


def rotel_available() -> bool:
    """True when a rotel executable is installed (``pip install rotel``); tests skip otherwise."""
    return rotel_binary() is not None


def _free_ports(count: int) -> list[int]:
    """Distinct ports that were free a moment ago (the OS picks them; held together, then freed)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class RotelHop(LocalService):
    """A rotel collector subprocess: OTLP in on 127.0.0.1 (gRPC and HTTP), OTLP out downstream.

    ``downstream`` is a receiver (its protocol is used) or an endpoint string with ``protocol``
    ("grpc" by default). Batches flush after ``batch_timeout`` (rotel duration syntax) so
    tests stay fast.
    """

    def __init__(
        self,
        downstream: str | OtlpHttpReceiver | OtlpGrpcReceiver,
        protocol: Literal["grpc", "http"] | None = None,
        *,
        batch_timeout: str = "10ms",
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        extra_args: Sequence[str] = (),
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(downstream, OtlpHttpReceiver):
            endpoint, proto = downstream.endpoint, protocol or "http"
        elif isinstance(downstream, OtlpGrpcReceiver):
            endpoint, proto = downstream.endpoint, protocol or "grpc"
        else:
            endpoint, proto = downstream, protocol or "grpc"
        if proto == "http":
            endpoint = endpoint.rstrip("/").removesuffix("/v1/traces")  # rotel appends the path
        elif "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        self.downstream_endpoint = endpoint
        self.protocol: Literal["grpc", "http"] = proto
        self.batch_timeout = batch_timeout
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = tuple(extra_args)
        self._binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._grpc_port: int | None = None
        self._http_port: int | None = None

    def _command(self, binary: Path, grpc_port: int, http_port: int, tmp: str) -> list[str]:
        return [
            str(binary),
            "start",
            "--pid-file",
            os.path.join(tmp, "rotel.pid"),
            "--log-file",
            os.path.join(tmp, "rotel.log"),
            "--otlp-grpc-endpoint",
            f"{HOST}:{grpc_port}",
            "--otlp-http-endpoint",
            f"{HOST}:{http_port}",
            "--batch-timeout",
            self.batch_timeout,
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            self.downstream_endpoint,
            "--otlp-exporter-protocol",
            self.protocol,
            "--otlp-exporter-request-timeout",
            "2s",
            "--otlp-exporter-retry-initial-backoff",
            "50ms",
            "--otlp-exporter-retry-max-backoff",
            "500ms",
            "--otlp-exporter-retry-max-elapsed-time",
            "10s",
            *self.extra_args,
        ]

    def start(self) -> Self:
        """Start rotel on free ports and wait (bounded) until both its receivers accept."""
        if self._proc is not None:
            return self
        binary = self._binary or rotel_binary()
        if binary is None:
            raise RuntimeError("rotel is not installed: `pip install rotel`")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        output = ""
        for _ in range(3):  # a port picked as free can be taken before rotel binds it
            proc = self._launch(binary, env)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if all(_accepts(p) for p in (self._grpc_port, self._http_port) if p is not None):
                    return self
                time.sleep(0.02)
            output, exited = self.output(), proc.poll() is not None
            self.stop()
            if not exited:
                raise RuntimeError(
                    f"rotel did not listen within {self.startup_timeout}s:\n{output}"
                )
        raise RuntimeError(f"rotel failed to start:\n{output}")

    def _launch(self, binary: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        self._tmpdir = tempfile.TemporaryDirectory(prefix="crucible-rotel-")
        self._grpc_port, self._http_port = _free_ports(2)
        self._log = tempfile.TemporaryFile(dir=self._tmpdir.name)  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self._command(binary, self._grpc_port, self._http_port, self._tmpdir.name),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self._proc

    def stop(self) -> None:
        """SIGTERM, wait at most ``stop_timeout``, then SIGKILL; remove temp files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        self._grpc_port = self._http_port = None

    def output(self) -> str:
        """What rotel printed so far (its log), for diagnosing a failed test."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return bytes(self._log.read()).decode("utf-8", "replace")

    @property
    def pid(self) -> int | None:
        """The rotel process id while running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of rotel's OTLP/gRPC receiver."""
        return url(self._running(self._grpc_port))

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of rotel's OTLP/HTTP receiver (base URL)."""
        return url(self._running(self._http_port))

    @property
    def http_traces_endpoint(self) -> str:
        """Full traces URL of rotel's OTLP/HTTP receiver."""
        return f"{self.http_endpoint}/v1/traces"
