"""Recognise secret-looking keys and redact their values before they leave the process."""

from __future__ import annotations

import functools
import re

REDACTED = "[REDACTED]"

# A key is secret when any of these appear as a word part anywhere in it...
_ANYWHERE = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "apikey",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "cookies",
        "passphrase",
        "privatekey",
        "dsn",
    }
)
# ...or when it ends with one of these (so ``access_token`` is secret, ``token_count`` is not).
_AT_END = frozenset({"token", "auth", "key", "bearer", "signature"})
# Word parts: acronyms (``API`` in ``APIKey``), capitalised or lowercase words, digit runs.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_KEY_QUALIFIERS = frozenset(
    {
        "api",
        "access",
        "secret",
        "private",
        "signing",
        "encryption",
        "client",
        "master",
        "license",
    }
)


def _parts(key: str) -> list[str]:
    """``X-Api-Key``, ``apiKey``, ``API_KEY``, ``ApiKey`` all give ``["api", "key"]``."""
    parts = [p.lower() for p in _WORDS.findall(key)]
    while len(parts) > 1 and parts[-1].isdigit():  # ``api_key_2`` is an ``api_key``
        parts.pop()
    return parts


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True when ``key`` names a secret (password, api_key, access_token, Authorization, ...).

    Case and style do not matter: ``API_KEY``, ``apiKey``, ``X-Api-Key`` and ``api-key`` are
    the same key; ``max_tokens``, ``token_count``, ``sort_key`` or ``keyboard`` are not secrets.
    """
    parts = _parts(key)
    if not parts:
        return False
    joined = "".join(parts)
    if any(p in _ANYWHERE for p in parts) or joined in _ANYWHERE:
        return True
    if any(w in joined for w in ("apikey", "privatekey", "secret", "password")):
        return True
    last = parts[-1]
    if last == "key":
        # ``key`` or ``sort_key`` are not secrets; ``api_key`` and ``access_key`` are.
        return len(parts) > 1 and parts[-2] in _KEY_QUALIFIERS
    return last in _AT_END
