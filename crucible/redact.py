"""Recognise secret-looking keys and redact their values before they leave the process."""

from __future__ import annotations

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
        "passphrase",
        "privatekey",
        "dsn",
    }
)
# ...or when it ends with one of these (so ``access_token`` is secret, ``token_count`` is not).
_AT_END = frozenset({"token", "auth", "key", "bearer", "signature"})
_SPLIT = re.compile(r"[^a-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def _parts(key: str) -> list[str]:
    return [p.lower() for p in _SPLIT.split(key) if p]


def is_secret_key(key: str) -> bool:
    """True when ``key`` names a secret (password, api_key, access_token, Authorization, ...)."""
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
        return len(parts) > 1 and parts[-2] in {
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
    return last in _AT_END
