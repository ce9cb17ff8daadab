"""``crucible ui``: a local, read-only web browser over the run store.

``serve()`` starts it; importing this package loads no web framework, so ``crucible.ui.charts``
can be used without the ``ui`` extra's server parts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["serve"]


def serve(
    store_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    *,
    jaeger_url: str | None = None,
    artifact_roots: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Serve the run browser until interrupted.

    ``token`` (or ``CRUCIBLE_UI_TOKEN``) is required off loopback; ``jaeger_url`` (or
    ``CRUCIBLE_JAEGER_URL``) adds trace links; artifacts are served from the working directory
    and ``artifact_roots``. Raises :class:`crucible.ui.config.UiError` when it cannot start.
    """
    from crucible.ui.server import run_server

    run_server(
        store_url=store_url,
        host=host,
        port=port,
        token=token,
        jaeger_url=jaeger_url,
        artifact_roots=artifact_roots,
    )
