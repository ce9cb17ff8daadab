"""The run browser's settings, and the rules it refuses to start without.

Bound to a loopback address it may run without a token; bound anywhere else it needs one, so
that run data never sits on a network unguarded. The Jaeger base must be an http(s) URL, since
it becomes a link.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from crucible.errors import CrucibleError

__all__ = ["TOKEN_ENV", "UiError", "UiSettings", "is_loopback", "settings_from"]

TOKEN_ENV = "CRUCIBLE_UI_TOKEN"
JAEGER_ENV = "CRUCIBLE_JAEGER_URL"


class UiError(CrucibleError):
    """The run browser cannot start as asked (no token off loopback, a bad URL, ...)."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class UiSettings:
    """Everything the app needs: where the store is, who may look, what links and files to show."""

    store_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    jaeger_url: str | None = None
    artifact_roots: tuple[Path, ...] = field(default_factory=lambda: (Path.cwd().resolve(),))

    def __post_init__(self) -> None:
        if not self.token and not is_loopback(self.host):
            raise UiError(
                f"refusing to serve on {self.host}, which is not a loopback address, without a "
                f"token: pass --token or set {TOKEN_ENV}"
            )
        if self.jaeger_url is not None:
            parts = urlsplit(self.jaeger_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise UiError(f"the Jaeger URL must be http(s)://host[:port]: {self.jaeger_url!r}")
        if not 0 <= self.port <= 65535:
            raise UiError(f"port {self.port} is out of range")

    @property
    def local_only(self) -> bool:
        return is_loopback(self.host)


def settings_from(
    *,
    store_url: str | None,
    host: str,
    port: int,
    token: str | None,
    jaeger_url: str | None = None,
    artifact_roots: Sequence[str | os.PathLike[str]] = (),
    environ: Mapping[str, str] | None = None,
) -> UiSettings:
    """Settings from arguments, falling back to the environment for the token and Jaeger URL.

    The artifact roots are the working directory plus ``artifact_roots``, each resolved.
    """
    env = os.environ if environ is None else environ
    roots = (Path.cwd(), *(Path(r).expanduser() for r in artifact_roots))
    return UiSettings(
        store_url=store_url,
        host=host,
        port=port,
        token=token or env.get(TOKEN_ENV) or None,
        jaeger_url=(jaeger_url or env.get(JAEGER_ENV) or None),
        artifact_roots=tuple(dict.fromkeys(r.resolve() for r in roots)),
    )
