"""JSON and TOML for untrusted experiment files: bounded nesting, duplicate JSON keys refused.

Both standard parsers recurse once per nested bracket, so the brackets are counted first (a
linear scan that skips strings and comments) and a document deeper than ``max_depth`` is
refused at the first bracket too many, before it is parsed. TOML's dotted keys (``a.b.c``) nest
too, and cost tomllib time and memory quadratic in their length, so a longer one is refused the
same way. A JSON object with a repeated key is an error naming the key and its line, as
tomllib already makes it for TOML.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from crucible.errors import ExperimentFileError
from crucible.experiment.limits import DEFAULT_LIMITS, DocumentLimits, located, position, shorten

# Tokens that matter for nesting. Every string token ends, at its quote or else at the end of the
# text (JSON) or of its line (TOML), so the scan stays linear; where a string never ends the
# parser fails, so nothing after it can be nested.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.?)*(?:"|\Z)|[\[\]{}:,]', re.DOTALL)
_TOML_KEY_PART = r"""(?:[A-Za-z0-9_-]++|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_TOML_TOKENS = re.compile(
    rf"(?P<dotted>(?<![A-Za-z0-9_-]){_TOML_KEY_PART}(?:[ \t]*\.[ \t]*{_TOML_KEY_PART})+)"
    r'|"""(?:[^\\]|\\.?)*?(?:"{3,5}|\Z)'
    r"|'''.*?(?:'{3,5}|\Z)"
    r'|"(?:[^"\\\n]|\\.?)*(?:"|$)'
    r"|'[^'\n]*(?:'|$)"
    r"|#[^\n]*"
    r"|[\[\]{}]",
    re.DOTALL | re.MULTILINE,
)
_TOML_KEY_PARTS = re.compile(_TOML_KEY_PART)


def _check_nesting(text: str, tokens: re.Pattern[str], source: str, max_depth: int) -> None:
    depth = 0
    for match in tokens.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > max_depth:
                message = f"nested deeper than {max_depth} levels"
                raise ExperimentFileError(source, [f"{position(text, match.start())}: {message}"])
        elif token in ("]", "}"):
            depth = max(depth - 1, 0)
        elif match.lastgroup == "dotted":
            parts = len(_TOML_KEY_PARTS.findall(token))
            if parts > max(max_depth, 2):  # a float (1.5) scans as two parts
                message = f"a dotted key of {parts:,} parts, deeper than {max_depth} levels"
                raise ExperimentFileError(source, [f"{position(text, match.start())}: {message}"])


class _DuplicateKey(Exception):
    """Raised from the object hook; which key and where is worked out on this error path."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


class _Open:
    """An object or array the duplicate scan is inside: where in it, and the keys seen so far."""

    def __init__(self, is_object: bool) -> None:
        self.at: str | int = 0
        self.keys: dict[str, int] | None = {} if is_object else None


def _first_duplicate(text: str) -> str:
    """The first repeated key by position, with its path and line. The parser accepted the text
    at least up to that key, so the scan sees exactly the parser's tokens."""
    frames: list[_Open] = []
    expect_key = False
    line, seen_to = 1, 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            frames.append(_Open(token == "{"))
            expect_key = token == "{"
        elif token in ("]", "}"):
            frames.pop()
            expect_key = False
        elif token == ",":
            top = frames[-1]
            if top.keys is None:
                top.at = int(top.at) + 1
            expect_key = top.keys is not None
        elif expect_key and (keys := frames[-1].keys) is not None:
            key = json.loads(token)
            line += text.count("\n", seen_to, match.start())
            seen_to = match.start()
            if key in keys:
                message = f"duplicate key {shorten(key)!r} (first on line {keys[key]})"
                path = [frame.at for frame in frames[:-1]]
                return f"{position(text, match.start())}: {located(path, message)}"
            keys[key] = line
            frames[-1].at = key
            expect_key = False
    return "an object repeats a key"


def load_json(text: str, *, source: str, limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """Parse a JSON document; every problem raises ExperimentFileError."""
    _check_nesting(text, _JSON_TOKENS, source, limits.max_depth)
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as err:
        message = f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}"
        raise ExperimentFileError(source, [message]) from None
    except _DuplicateKey:
        raise ExperimentFileError(source, [_first_duplicate(text)]) from None
    except ValueError as err:  # a number too long to convert
        raise ExperimentFileError(source, [f"invalid JSON: {err}"]) from None
    except RecursionError:
        message = "nested too deeply for the JSON parser; lower max_depth"
        raise ExperimentFileError(source, [message]) from None


def load_toml(text: str, *, source: str, limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """Parse a TOML document (tomllib refuses repeated keys); every problem raises
    ExperimentFileError."""
    _check_nesting(text, _TOML_TOKENS, source, limits.max_depth)
    try:
        return tomllib.loads(text)
    except ValueError as err:  # a TOMLDecodeError, or a number too long to convert
        raise ExperimentFileError(source, [f"invalid TOML: {err}"]) from None
    except RecursionError:
        message = "nested too deeply for the TOML parser; lower max_depth"
        raise ExperimentFileError(source, [message]) from None
