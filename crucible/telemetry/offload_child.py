"""The OTLP export child's entry point: ``python -m crucible.telemetry.offload_child``.

SIGINT and SIGTERM are ignored before the OpenTelemetry exporter loads: a Ctrl-C or a SIGTERM
sent to the whole process group (a terminal, systemd) is for the parent, which still needs this
process to export the spans it flushes while it stops. The parent starts it with both signals
blocked, so none is lost to a child that has not got this far. It ends when its stdin closes or
its parent is gone (``offload.child_main``).
"""

import os
import signal
import sys


def ignore_stop_signals() -> None:
    """Ignore SIGINT and SIGTERM, then unblock them (pending ones are discarded)."""
    stops = {getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n)}
    for sig in stops:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


if __name__ == "__main__":
    ignore_stop_signals()
    from crucible.telemetry.offload import child_main  # the SDK loads only now

    # Answers go to the original stdout; anything a library prints lands on stderr instead.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    child_main(sys.stdin.fileno(), answers)
