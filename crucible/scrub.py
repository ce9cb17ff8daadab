"""Scrub secret values from every string a run emits, not only the values under secret keys.

The secrets of a run are the strings under secret-looking keys anywhere in its experiment (stage,
backend and output options, metadata, ...) and in its assigns, the passwords of URLs written
with userinfo (``https://user:password@host/``) in any of their strings, every pydantic
``SecretStr`` in its validated options, and the values of secret-named environment variables
(``GITHUB_TOKEN``, ``DB_PASSWORD``). The engine makes the run's :class:`Scrubber`
active while the run executes; logs, spans, store rows, reports and exception messages pass
their strings through it. Values shorter than four characters are not scrubbed (they would blank
ordinary words).
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import sys
import traceback
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote

from crucible.redact import REDACTED, is_secret_key

MIN_SECRET_LEN = 4
_REDACTED_BYTES = REDACTED.encode()
_MAX_EXCEPTIONS = 256  # exceptions scrubbed per chain (causes, contexts and group members)
_ENV_SKIP = frozenset({"PWD", "OLDPWD"})  # "pwd" reads as password; these are folders


class Scrubber:
    """Replaces each known secret value in strings with ``[REDACTED]`` (longest first).

    ``pattern`` matches any of ``values``; None when there are none (a hot path's check).
    """

    __slots__ = ("__weakref__", "_bytes", "_bytes_made", "_encoded", "pattern", "values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = frozenset(v for v in values if len(v) >= MIN_SECRET_LEN)
        ordered = sorted(self.values, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._encoded: Scrubber | None = None
        self._bytes: re.Pattern[bytes] | None = None  # made on first use (binary)
        self._bytes_made = False

    def __bool__(self) -> bool:
        return self.pattern is not None

    def __or__(self, other: Scrubber) -> Scrubber:
        if not other:
            return self
        if not self:
            return other
        return Scrubber(self.values | other.values)

    def encoded(self) -> Scrubber:
        """Also matching the secrets as JSON strings, HTML text and CSV cells write them."""
        if self.pattern is None:
            return self
        if self._encoded is not None:
            return self._encoded
        self._encoded = Scrubber(encoded_forms(self.values))
        self._encoded._encoded = self._encoded
        return self._encoded

    def finds(self, text: str) -> bool:
        """Whether ``text`` holds one of the secrets."""
        return self.pattern is not None and self.pattern.search(text) is not None

    def text(self, text: str) -> str:
        """``text`` with every secret replaced."""
        if self.pattern is None or not text:
            return text
        return self.pattern.sub(REDACTED, text)

    def binary(self, data: bytes | bytearray | memoryview) -> bytes:
        """``data`` with every secret's bytes (UTF-8, or a bytes secret's own) replaced."""
        if not self._bytes_made:
            forms = set()
            for v in self.values:
                with contextlib.suppress(UnicodeEncodeError):
                    forms.add(v.encode("utf-8", "surrogateescape"))
            ordered = sorted(forms, key=len, reverse=True)
            self._bytes = re.compile(b"|".join(map(re.escape, ordered))) if ordered else None
            self._bytes_made = True
        data = bytes(data)
        return data if self._bytes is None else self._bytes.sub(_REDACTED_BYTES, data)

    def value(self, value: Any, _depth: int = 0) -> Any:
        """Strings (and bytes) scrubbed inside ``value`` (mappings, their keys, lists and tuples
        walked); others kept."""
        if self.pattern is None:
            return value
        if isinstance(value, str):
            return self.pattern.sub(REDACTED, value)
        if isinstance(value, bytes | bytearray):
            return self.binary(value)
        if _depth > 32:
            return value
        if isinstance(value, Mapping):  # keys too: an attribute or metric name may quote one
            sub = self.pattern.sub
            return {
                (sub(REDACTED, k) if isinstance(k, str) else k): self.value(v, _depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.value(v, _depth + 1) for v in value]
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(self.value(v, _depth + 1) for v in value)
        return value

    def exception_event(self, err: BaseException) -> dict[str, str] | None:
        """Attributes overriding a span's ``exception`` event: message and stack trace scrubbed
        (also for an exception whose ``str`` does not come from its args, like OSError)."""
        if self.pattern is None:
            return None
        stack = "".join(traceback.format_exception(err))
        return {"exception.message": self.text(str(err)),
                "exception.stacktrace": self.text(stack)}  # fmt: skip

    def exception(self, err: BaseException) -> BaseException:
        """Scrub ``err``, its causes and an exception group's members in place: their string
        arguments, an OSError's file names and their notes; return ``err``."""
        if self.pattern is None:
            return err
        seen: set[int] = set()
        todo: list[BaseException] = [err]
        while todo and len(seen) < _MAX_EXCEPTIONS:
            current = todo.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            self._scrub_one(current)
            for linked in (current.__cause__, current.__context__):
                if linked is not None:
                    todo.append(linked)
            if isinstance(current, BaseExceptionGroup):
                todo.extend(current.exceptions)
        return err

    def _scrub_one(self, err: BaseException) -> None:
        with contextlib.suppress(AttributeError, TypeError):
            if any(isinstance(a, str) for a in err.args):
                err.args = tuple(self.text(a) if isinstance(a, str) else a for a in err.args)
            if isinstance(err, OSError):
                for name in ("filename", "filename2"):
                    if isinstance(getattr(err, name), str):
                        setattr(err, name, self.text(getattr(err, name)))
            notes = getattr(err, "__notes__", None)
            if isinstance(notes, list):
                notes[:] = [self.text(n) if isinstance(n, str) else n for n in notes]


def encoded_forms(values: Iterable[str]) -> set[str]:
    """``values`` and how JSON strings, HTML text and CSV cells write them."""
    forms: set[str] = set()
    for v in values:
        forms.update((v, json.dumps(v)[1:-1], html.escape(v), html.escape(v, quote=False),
                      v.replace('"', '""')))  # fmt: skip
    return forms


_ESCAPED = frozenset("\"\\<>&'")  # characters JSON, HTML or CSV write differently


def found_in(values: Iterable[str], text: str) -> bool:
    """Whether any of ``values`` occurs in ``text`` as written or in one of its encoded forms
    (those are made only for a value that has a character they change)."""
    for v in values:
        if v in text:
            return True
        plain = v.isascii() and v.isprintable() and _ESCAPED.isdisjoint(v)
        if not plain and any(form in text for form in encoded_forms((v,))):
            return True
    return False


NO_SECRETS = Scrubber()
_active: ContextVar[Scrubber] = ContextVar("crucible_scrubber", default=NO_SECRETS)


def for_run(plan_secrets: Iterable[str], assigns: Any) -> Scrubber:
    """A run's scrubber: its plan's secrets (its experiment's and options'), its assigns' and
    the environment's."""
    env = env_scrubber()
    extra = secret_values(assigns) if assigns else set()
    if not extra and not plan_secrets:
        return env
    return Scrubber(env.values | set(plan_secrets) | extra)


def activate(scrubber: Scrubber) -> Any:
    """Make ``scrubber`` active in this context; returns the token for :func:`deactivate`."""
    return _active.set(scrubber)


def deactivate(token: Any) -> None:
    _active.reset(token)


class Scope:
    """``with Scope() as hide: ... hide.use(scrubber)``: active until the block ends."""

    def __init__(self) -> None:
        self._tokens: list[Any] = []

    def __enter__(self) -> Scope:
        return self

    def use(self, scrubber: Scrubber) -> None:
        self._tokens.append(activate(scrubber))

    def __exit__(self, *exc: object) -> None:
        while self._tokens:
            deactivate(self._tokens.pop())


def _pydantic() -> tuple[Any, Any]:
    """(BaseModel, (SecretStr, SecretBytes)), or (None, ()) while pydantic is not imported: then
    no value can be one (and a CLI that never loads pydantic does not pay for it)."""
    pyd = sys.modules.get("pydantic")
    if pyd is None:
        return None, ()
    return pyd.BaseModel, (pyd.SecretStr, pyd.SecretBytes)


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > 32:
        return
    _, secret_types = _pydantic()
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes | bytearray | memoryview):
        yield from _byte_forms(bytes(value))
    elif secret_types and isinstance(value, secret_types):
        secret = value.get_secret_value()
        if isinstance(secret, str):
            yield secret
        else:
            yield from _byte_forms(secret)
    elif isinstance(value, Mapping):
        for child in value.values():
            yield from _strings(child, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for child in value:
            yield from _strings(child, depth + 1)
    elif value is not None and not isinstance(value, bool | int | float):
        yield str(value)


def _byte_forms(secret: bytes) -> tuple[str, str, str]:
    """A bytes secret as text (undecodable bytes as ``surrogateescape`` keeps them, so the
    scrubber's bytes pattern finds the same bytes again), as its ``repr`` shows it (an event
    attribute, a log line) and as base64 (how ``to_jsonable`` writes bytes)."""
    return (secret.decode("utf-8", "surrogateescape"), repr(secret)[2:-1],
            base64.b64encode(secret).decode("ascii"))  # fmt: skip


MAX_VISITED = 10_000  # values examined per secret_values call: assigns may hold whole datasets


def secret_values(value: Any) -> set[str]:
    """Strings under secret-looking keys, every SecretStr, and the passwords of URLs with
    userinfo in any other string (:func:`url_passwords`), in ``value``.

    Walks dicts, lists, tuples and pydantic models (not other mapping types, which may compute
    their items), at most 32 levels deep and MAX_VISITED values in all.
    """
    found: set[str] = set()
    model, secret_types = _pydantic()
    budget = MAX_VISITED
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and budget > 0:
        current, depth = stack.pop()
        budget -= 1
        if depth > 32:
            continue
        if isinstance(current, str):
            if "://" in current:
                found.update(url_passwords(current))
            continue
        if secret_types and isinstance(current, secret_types):
            found.update(_strings(current))
            continue
        if model is not None and isinstance(current, model):
            items: Iterable[tuple[Any, Any]] = (
                (name, getattr(current, name, None)) for name in type(current).model_fields
            )
        elif isinstance(current, dict):
            items = current.items()
        elif isinstance(current, list | tuple):
            stack.extend((child, depth + 1) for child in current[:budget])
            continue
        else:
            continue
        for key, child in items:
            if isinstance(key, str) and is_secret_key(key):
                found.update(_strings(child))
            else:
                stack.append((child, depth + 1))
    for whole in [s for s in found if "://" in s]:  # a DSN's password may show on its own
        found.update(url_passwords(whole))
    return {s for s in found if len(s) >= MIN_SECRET_LEN}


# scheme://userinfo@host: the userinfo runs to the authority's last "@" (as urlsplit reads it,
# so an unencoded "@" in a password stays in it), then user:password, or a token alone.
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^\s/?#]*)@")
_URL_QUERY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s?#]*\?([^\s#]+)")
_TOKEN_MIN = (
    20  # a colon-free userinfo this long is a token (https://ghp_...@github.com), not a name
)


def url_passwords(text: str) -> set[str]:
    """The passwords of ``scheme://user:password@host`` URLs in ``text``, the tokens of
    ``scheme://TOKEN@host`` ones (a colon-free userinfo of 20 characters or more) and the values
    of secret-named query parameters (``?password=...``), as written and percent-decoded (an
    error message may show either)."""
    found: set[str] = set()
    for match in _URL_USERINFO.finditer(text):
        user, colon, password = match[1].partition(":")
        secret = password if colon else (user if len(user) >= _TOKEN_MIN else "")
        if secret:
            found.update((secret, unquote(secret)))
    for match in _URL_QUERY.finditer(text):  # postgresql://h/db?password=... (libpq reads it)
        for name, _, value in (part.partition("=") for part in match[1].split("&")):
            if value and is_secret_key(unquote(name)):
                found.update((value, unquote(value)))
    return found


_definition_cache: dict[int, tuple[weakref.ref[Any], frozenset[str]]] = {}
_DEFINITION_CACHE_SIZE = 256


def definition_secrets(definition: Any) -> frozenset[str]:
    """:func:`secret_values` of a frozen definition (an Experiment: every secret-looking key in
    its stage, backend and output options, metadata, ...), computed once per object."""
    key = id(definition)
    hit = _definition_cache.get(key)
    if hit is not None and hit[0]() is definition:
        return hit[1]
    found = frozenset(secret_values(definition))
    if len(_definition_cache) >= _DEFINITION_CACHE_SIZE:
        _definition_cache.pop(next(iter(_definition_cache)))
    _definition_cache[key] = (weakref.ref(definition), found)
    return found


def for_experiment(experiment: Any, assigns: Any = None) -> Scrubber:
    """The scrubber a run of ``experiment`` with ``assigns`` has, apart from SecretStr options
    (those show only once its options are validated): the experiment's, assigns' and the
    environment's secrets."""
    return for_run(definition_secrets(experiment), assigns)


_env_cache: tuple[int, tuple[tuple[str, str], ...], Scrubber] | None = None


# Environment names that end so are secrets by convention (OPENAI_KEY, DB_PASS, SMTP_PW), where
# a key or option of that name need not be (sort_key); with a value that looks like one.
_ENV_SECRET_ENDS = frozenset({"KEY", "PASS", "PW", "PWD"})


def _secret_env(name: str, value: str) -> bool:
    if is_secret_key(name):
        return True
    last = name.rsplit("_", 1)[-1].upper()
    return "_" in name and last in _ENV_SECRET_ENDS and len(value) >= 8 and not value.isdigit()


def env_scrubber() -> Scrubber:
    """The values of secret-named environment variables.

    Rescanned when the number of variables changes or a secret-named one changes its value
    (a cheap check: this runs once per run).
    """
    global _env_cache
    env = os.environ
    cached = _env_cache
    if cached is not None and cached[0] == len(env) and all(env.get(k) == v for k, v in cached[1]):
        return cached[2]
    named = [(k, v) for k, v in env.items() if k not in _ENV_SKIP and _secret_env(k, v)]
    named = [(k, v) for k, v in named if len(v) >= MIN_SECRET_LEN]
    # Any variable holding a URL with a password (DATABASE_URL=postgresql://u:pw@host/db).
    urls = [(k, v) for k, v in env.items() if "://" in v and k not in _ENV_SKIP]
    passwords = {p for _, v in urls for p in url_passwords(v)}
    items = tuple(named) + tuple((k, v) for k, v in urls if url_passwords(v))
    found = Scrubber([*(v for _, v in named), *passwords])
    _env_cache = (len(env), items, found)
    return found


def active() -> Scrubber:
    """The scrubber of the run executing in this context (its secrets and the environment's);
    outside a run, the environment's."""
    current = _active.get()
    return current if current is not NO_SECRETS else env_scrubber()


def scrub_text(text: str) -> str:
    """``text`` through the active scrubber (the current run's and the environment's)."""
    return active().text(text)
