"""ASGI middleware that guards the service: the Host names, a bearer token, a body limit.

All are plain ASGI, outside the routing, so a request naming another host or without the token
is refused before its body is read, and a body over the limit is refused as soon as the limit is
passed (from its ``Content-Length``, or while its chunks arrive), never buffered whole.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crucible.ui.config import is_loopback
from crucible.ui.guard import split_host

__all__ = ["AllowedHosts", "BearerToken", "BodyLimit", "host_allowed"]

_BEARER: Final = b"bearer "


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def host_allowed(
    header: str, allowed: Sequence[str], *, server: Any = None, scheme: str = "http"
) -> bool:
    """Whether a request whose Host header is ``header`` is meant for this service.

    ``allowed`` entries are ``name`` (any port), ``name:port`` or ``*`` (any Host). With none,
    only a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``) with the port the service
    listens on (``server``, the ASGI scope's ``(host, port)``) is.
    """
    name, port = split_host(header.strip().lower())
    name = name.removesuffix(".")
    if port is None:
        port = "443" if scheme in ("https", "wss") else "80"
    if not name or not port.isdigit():
        return False
    if not allowed:
        listening = server[1] if server and len(server) > 1 else None
        return is_loopback(name) and (listening is None or int(port) == int(listening))
    for entry in allowed:
        if entry == "*":
            return True
        want, want_port = split_host(entry.strip().lower())
        if want.removesuffix(".") == name and (want_port is None or want_port == port):
            return True
    return False


class AllowedHosts:
    """Answer 421 unless the Host header names this service (:func:`host_allowed`), 400 without one.

    A web page whose domain an attacker rebinds to 127.0.0.1 still sends its own domain as the
    Host, so it cannot read the service's answers. ``open_paths`` are not checked.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts_of: Callable[[], Sequence[str]],
        open_paths: Collection[str] = ("/health",),
    ) -> None:
        self.app = app
        self.hosts_of = hosts_of
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        raw = _header(scope, b"host")
        if raw is None:
            detail = "no Host header: send the host this service answers to"
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
            return
        header = raw.decode("latin-1")
        server, scheme = scope.get("server"), scope.get("scheme", "http")
        if host_allowed(header, self.hosts_of(), server=server, scheme=scheme):
            await self.app(scope, receive, send)
            return
        shown = header if len(header) <= 100 else header[:100] + "..."
        detail = (
            f"this service does not answer to Host {shown!r}; it answers to the names in "
            "ServiceSettings.allowed_hosts (CRUCIBLE_SERVICE_ALLOWED_HOSTS), by default "
            "127.0.0.1, localhost and [::1] on its own port"
        )
        await JSONResponse({"detail": detail}, status_code=421)(scope, receive, send)


class BearerToken:
    """Answer 401 unless ``Authorization: Bearer <token>`` matches (compared in constant time).

    ``token_of()`` gives the expected token (None: no token needed); ``open_paths`` need none.
    The token given is never logged or echoed.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token_of: Callable[[], bytes | None],
        open_paths: Collection[str] = ("/health",),
    ) -> None:
        self.app = app
        self.token_of = token_of
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        expected = self.token_of() if scope["type"] == "http" else None
        if expected is None or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        given = header[len(_BEARER) :].strip() if header and header[:7].lower() == _BEARER else None
        if given is not None and hmac.compare_digest(given, expected):
            await self.app(scope, receive, send)
            return
        challenge = 'Bearer realm="crucible"' + ("" if given is None else ', error="invalid_token"')
        detail = "missing bearer token" if given is None else "invalid bearer token"
        reply = JSONResponse(
            {"detail": f"{detail}: send 'Authorization: Bearer <CRUCIBLE_SERVICE_TOKEN>'"},
            status_code=401,
            headers={"WWW-Authenticate": challenge},
        )
        await reply(scope, receive, send)


class BodyLimit:
    """Answer 413 to a request body over ``limit_of()`` bytes; otherwise hand the app the body
    read (at most the limit), then the rest of the connection's messages."""

    def __init__(self, app: ASGIApp, *, limit_of: Callable[[], int]) -> None:
        self.app = app
        self.limit_of = limit_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of()
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await self._refuse(limit, scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its whole body: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(limit, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        body: Message | None = {"type": "http.request", "body": whole, "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()  # after the body: http.disconnect, when it comes

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        detail = (
            f"request body larger than {limit:,} bytes "
            "(ServiceSettings.max_body_bytes, CRUCIBLE_SERVICE_MAX_BODY_BYTES)"
        )
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
