"""What every local test service here shares: 127.0.0.1, start/stop or a with block, its ports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["HOST", "LocalService", "url"]

HOST = "127.0.0.1"


def url(port: int) -> str:
    """``http://127.0.0.1:PORT``."""
    return f"http://{HOST}:{port}"


class LocalService(ABC):
    """A server a test starts on 127.0.0.1 and stops again: by hand or as a with block."""

    @abstractmethod
    def start(self) -> Self:
        """Start serving (a no-op when running) and return self."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving (a no-op when stopped)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _running(self, port: int | None) -> int:
        """``port`` while running; a clear error before start() or after stop()."""
        if port is None:
            name = type(self).__name__
            raise RuntimeError(f"{name} is not running; use start() or a with block")
        return port
