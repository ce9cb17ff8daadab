"""FileAccess refusals: what they say, with and without this machine's folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from crucible.errors import FileAccessError
from crucible.files import FileAccess


def access(tmp_path: Path, *, show_paths: bool) -> FileAccess:
    data, reports = tmp_path / "data", tmp_path / "reports"
    data.mkdir()
    reports.mkdir()
    return FileAccess(read_roots=(data,), write_roots=(reports,), read_base=data,
                      write_base=reports, show_paths=show_paths)  # fmt: skip


def refusal(call: object, *args: str, **kwargs: str) -> str:
    with pytest.raises(FileAccessError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(caught.value)


def test_refusals_name_the_resolved_path_and_the_roots_by_default(tmp_path: Path) -> None:
    shown = access(tmp_path, show_paths=True)
    outside = refusal(shown.readable, "../secret.txt", option="path")
    assert outside.startswith(f"option 'path': '../secret.txt' ({tmp_path / 'secret.txt'})")
    assert f"may read ({tmp_path / 'data'})" in outside
    assert str(tmp_path / "data" / "nope.csv") in refusal(shown.readable, "nope.csv")
    assert f"may write ({tmp_path / 'reports'})" in refusal(shown.writable, "/")


def test_without_show_paths_a_refusal_holds_only_the_path_as_given(tmp_path: Path) -> None:
    hidden = access(tmp_path, show_paths=False)
    outside = refusal(hidden.readable, "../secret.txt", option="path")
    assert outside == (
        "option 'path': '../secret.txt' is outside the folders this run may read; "
        "allow it with --allow-read DIR or run(..., file_access=...)"
    )
    assert refusal(hidden.readable, "nope.csv") == "'nope.csv' does not exist"
    assert str(tmp_path) not in refusal(hidden.writable, "../out")
    # widening keeps the choice, and the checks themselves are the same
    wider = hidden.widened(read=[tmp_path])
    assert wider.show_paths is False
    assert (
        wider.readable(tmp_path / "data" / ".." / "x.txt", must_exist=False) == tmp_path / "x.txt"
    )
    assert dataclasses.replace(hidden, show_paths=True).readable(
        "a.txt", must_exist=False
    ) == hidden.readable("a.txt", must_exist=False)
