"""Text from untrusted sources (run ids, error messages, metric names, option values) made safe
for a terminal: control and bidi-override characters are shown as visible escapes.

A stored string can hold ESC sequences (clear the screen, set the window title, OSC 8 links),
C1 controls (U+0080-U+009F, some terminals act on them) or bidi overrides that reorder what the
operator reads. The CLI prints every such string through these functions; ``--json`` keeps the
exact text, with the same characters written as JSON ``\\uXXXX`` escapes.
"""

from __future__ import annotations

from rich.text import Span, Text

__all__ = ["inline", "json_safe", "multiline", "safe_text"]

_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_UNSAFE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *_BIDI]


def _shown(code: int) -> str:
    """``\\n``, ``\\x1b``, ``\\u202e``: how one unsafe character is written."""
    return _NAMED.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


_INLINE = {code: _shown(code) for code in _UNSAFE}
_MULTILINE = {code: shown for code, shown in _INLINE.items() if code not in (0x09, 0x0A)}
# JSON already escapes U+0000-U+001F; with ensure_ascii=False it leaves these as they are.
_JSON = {code: f"\\u{code:04x}" for code in _UNSAFE if code >= 0x7F}


def inline(text: str) -> str:
    """``text`` for one line or table cell: every control (newline and tab too) escaped."""
    return text.translate(_INLINE)


def multiline(text: str) -> str:
    """``text`` for a message that may span lines: controls escaped but newline and tab."""
    return text.translate(_MULTILINE)


def json_safe(text: str) -> str:
    """JSON text with DEL, C1 and bidi characters as ``\\uXXXX`` (the same JSON value)."""
    return text.translate(_JSON)


def safe_text(text: Text, *, lines: bool = False) -> Text:
    """A rich Text with its characters escaped as ``inline`` (``multiline`` when ``lines``)
    does, its styled spans kept; ``text`` itself when nothing needed escaping."""
    escape = multiline if lines else inline
    plain = text.plain
    if escape(plain) == plain:
        return text
    cuts = sorted({at for span in text.spans for at in (span.start, span.end)} - {0, len(plain)})
    out = Text(style=text.style, justify=text.justify, overflow=text.overflow, end=text.end)
    out.no_wrap = text.no_wrap
    for piece in text.divide(cuts):
        shown = escape(piece.plain)
        # Every cut is a span boundary, so each span of a piece covers all of it.
        spans = [Span(0, len(shown), span.style) for span in piece.spans]
        out.append_text(Text(shown, spans=spans))
    return out
