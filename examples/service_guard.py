"""ASGI middleware that guards the service: a bearer token and a request body limit.

Both are plain ASGI, outside the routing, so a request without the token is refused before its
body is read, and a body over the limit is refused as soon as the limit is passed (from its
``Content-Length``, or while its chunks arrive), never buffered whole. Starlette ships neither.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection
from typing import Final

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BearerToken", "BodyLimit"]

_BEARER: Final = b"bearer "


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


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
