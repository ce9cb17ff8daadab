"""crucible.cli.terminal: which characters are escaped, how, and that JSON stays the same value."""

from __future__ import annotations

import json

from rich.console import Console
from rich.text import Text

from crucible.cli.output import SafeTable
from crucible.cli.terminal import inline, json_safe, multiline, safe_text


def test_every_control_c1_and_bidi_character_is_escaped_visibly() -> None:
    assert inline("a\x1b[2Jb") == r"a\x1b[2Jb"
    assert inline("\x00\x07\x7f\x85\x9b") == r"\x00\x07\x7f\x85\x9b"
    assert inline("\t\r\n") == r"\t\r\n"
    bidi = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    assert inline(bidi) == r"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    # Printable text, other Unicode and markup-looking text are left alone.
    assert inline("é ü 日本 → [bold]x[/bold] \\ \u00a0") == "é ü 日本 → [bold]x[/bold] \\ \u00a0"


def test_multiline_keeps_newline_and_tab_only() -> None:
    assert multiline("a\n\tb\r\n\x1b]0;T\x07") == "a\n\tb\\r\n\\x1b]0;T\\x07"


def test_json_safe_writes_the_same_json_value() -> None:
    value = {"k\x1b\u202e": "v\x7f\x9b\u2066\r\n"}
    text = json_safe(json.dumps(value, ensure_ascii=False))
    assert not any(c in text for c in "\x1b\x7f\x9b\u202e\u2066\r\n")
    assert json.loads(text) == value


def test_safe_text_keeps_styles_around_the_escapes() -> None:
    text = Text.assemble(("bold\x1b[2J", "bold"), " plain\u202e", ("red", "red"))
    safe = safe_text(text)
    assert safe.plain == r"bold\x1b[2J plain\u202ered"
    assert [(safe.plain[s.start : s.end], s.style) for s in safe.spans] == [
        (r"bold\x1b[2J", "bold"),
        ("red", "red"),
    ]
    clean = Text("fine", style="green")
    assert safe_text(clean) is clean


def test_safe_table_cells_and_headers_are_literal() -> None:
    table = SafeTable()
    table.add_column("h\x1b[5m")
    table.add_row("[link=http://x]c[/link]\x07\x1b]0;T")
    console = Console(width=120, force_terminal=True, color_system="truecolor")
    with console.capture() as captured:
        console.print(table)
    out = captured.get()
    assert r"h\x1b[5m" in out and r"[link=http://x]c[/link]\x07\x1b]0;T" in out
    assert "\x1b]" not in out and "\x07" not in out
