"""The run browser's gate: who may ask (token, Host) and the headers every answer carries.

With a token, every request must bring it, as ``Authorization: Bearer <token>`` or as the
cookie that visiting any page with ``?token=<token>`` sets (then the URL drops the token).
Comparisons are constant-time, and the cookie holds a digest of the token, not the token.
Bound to loopback, a request must also name a loopback Host, so a web page whose domain was
rebound to 127.0.0.1 cannot read the store. A request target (path and query) longer than
:data:`~crucible.ui.params.MAX_TARGET_BYTES` is refused before anything reads it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final
from urllib.parse import unquote_plus, urlencode

from markupsafe import escape
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crucible.ui.config import is_loopback
from crucible.ui.params import MAX_TARGET_BYTES

__all__ = ["COOKIE", "SECURITY_HEADERS", "Guard", "cookie_value", "split_host"]

COOKIE: Final = "crucible_ui"
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def cookie_value(token: str) -> str:
    """What the auth cookie holds: a keyed digest of the token."""
    return hmac.new(token.encode(), b"crucible-ui-cookie", hashlib.sha256).hexdigest()


def _same(supplied: str, expected: str) -> bool:
    return hmac.compare_digest(supplied.encode(), expected.encode())


def split_host(header: str) -> tuple[str, str | None]:
    """A Host header's name and port text (None: no port): ``[::1]:8765`` -> ``("::1", "8765")``.

    Anything after a bracketed name but a ``:port`` comes back as the port, so it matches none.
    """
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        return name, (rest[1:] if rest.startswith(":") else rest or None)
    if header.count(":") == 1:
        name, _, port = header.partition(":")
        return name, port
    return header, None


def _host_name(header: str) -> str:
    return split_host(header)[0]


class Guard:
    """ASGI middleware: check the Host and the token, then add :data:`SECURITY_HEADERS`."""

    def __init__(self, app: ASGIApp, *, token: str | None, local_only: bool) -> None:
        self.app = app
        self.token = token or None
        self.local_only = local_only
        self._cookie = cookie_value(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _too_long(scope) or self._refusal(Request(scope))
        if refusal is not None:
            await _with_headers(refusal, send, scope, receive)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_secured)

    def _refusal(self, request: Request) -> Response | None:
        """The response that refuses ``request``, or None when it may go on."""
        host = request.headers.get("host")
        if self.local_only and host is not None and not is_loopback(_host_name(host)):
            return PlainTextResponse("unknown host: open this page through 127.0.0.1", 403)
        if self.token is None or self._cookie is None:
            return None
        supplied = request.query_params.get("token")
        if supplied is not None:
            if not _same(supplied, self.token):
                return _unauthorized()
            kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            query = urlencode(kept)
            path = "/" + request.url.path.lstrip("/")  # never "//host": that leaves the site
            location = path + (f"?{query}" if query else "")
            response = RedirectResponse(location, status_code=303)
            response.set_cookie(COOKIE, self._cookie, httponly=True, samesite="strict")
            return response
        auth = request.headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer" and _same(credential.strip(), self.token):
            return None
        if _same(request.cookies.get(COOKIE, ""), self._cookie):
            return None
        return _unauthorized()


def _too_long(scope: Scope) -> Response | None:
    """A short 400 page when the request's path and query string together exceed the bound."""
    path = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    if len(path) + len(query) <= MAX_TARGET_BYTES:
        return None
    message = f"the address is too long: at most {MAX_TARGET_BYTES:,} bytes of path and query"
    sizes: dict[str, list[int]] = {}
    for part in query.split(b"&"):
        name = unquote_plus(part.partition(b"=")[0].decode("latin-1"))[:40]
        sizes.setdefault(name, []).append(len(part) + 1)
    if sizes:
        name, used = max(sizes.items(), key=lambda kv: sum(kv[1]))
        message += f"; most of it is {name!r} ({len(used):,} values, {sum(used):,} bytes)"
    body = f"<!doctype html><title>400 · Crucible</title><h1>400</h1><p>{escape(message)}</p>"
    return HTMLResponse(body, 400)


def _unauthorized() -> Response:
    return PlainTextResponse(
        "this run browser needs its token: open /?token=<token> once, "
        "or send 'Authorization: Bearer <token>'",
        401,
        headers={"www-authenticate": "Bearer"},
    )


async def _with_headers(response: Response, send: Send, scope: Scope, receive: Receive) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    await response(scope, receive, send)
