"""Which recorded artifacts the browser may serve, and how.

A location is served only when it names a regular file that, with every symlink resolved,
lies inside one of the allowed roots; a relative location is taken from the first root (the
directory ``crucible ui`` started in). Anything else is shown as text. Served files run in a
sandbox (no scripts, no access to the browser's pages), since a report is run output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

__all__ = ["ARTIFACT_CSP", "media_type", "servable"]

ARTIFACT_CSP: Final = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_INLINE: Final = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".markdown": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".csv": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".jsonl": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}


def servable(location: str | None, roots: Sequence[Path]) -> Path | None:
    """The real path of ``location`` when it may be served, else None.

    ``roots`` must be resolved already (the settings resolve them).
    """
    if not location or not roots:
        return None
    if "://" in location:
        parts = urlsplit(location)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            return None
        location = unquote(parts.path)
    path = Path(location)
    if not path.is_absolute():
        path = roots[0] / path
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
        return None
    if not real.is_file():
        return None
    return real if any(real.is_relative_to(root) for root in roots) else None


def media_type(path: Path) -> tuple[str, bool]:
    """The content type to serve ``path`` with, and whether a browser should show it inline."""
    kind = _INLINE.get(path.suffix.lower())
    return (kind, True) if kind else ("application/octet-stream", False)
