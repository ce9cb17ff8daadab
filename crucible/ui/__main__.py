"""``python -m crucible.ui --store URL --host H --port P [--token T]``: serve the run browser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from crucible.ui import serve
from crucible.ui.config import JAEGER_ENV, TOKEN_ENV, UiError


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and serve; 2 (with a message) when it cannot start."""
    parser = argparse.ArgumentParser(
        prog="python -m crucible.ui", description="Browse the run store in a web page."
    )
    parser.add_argument("--store", default=None, help="store URL (default .crucible/runs.db)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--token", default=None, help=f"required off loopback; or {TOKEN_ENV}")
    parser.add_argument("--jaeger-url", default=None, help=f"Jaeger UI base; or {JAEGER_ENV}")
    parser.add_argument(
        "--artifacts-root",
        action="append",
        default=[],
        help="another folder whose artifact files may be opened (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        serve(
            args.store,
            args.host,
            args.port,
            args.token,
            jaeger_url=args.jaeger_url,
            artifact_roots=args.artifacts_root,
        )
    except UiError as err:
        print(f"crucible ui: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
