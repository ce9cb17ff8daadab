"""Which process owns a run: this host's name, and whether a process id is still alive.

The store uses both to mark runs of processes that died as ``abandoned``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

__all__ = ["host_name", "process_alive"]


def host_name() -> str:
    """This machine's host name, as stored in ``runs.owner_host``."""
    return socket.gethostname()


def process_alive(pid: int) -> bool:
    """True unless ``pid`` certainly names no live process on this host (zombies are dead)."""
    if sys.platform == "win32":  # os.kill would terminate the process; assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
