"""FileAccess refusals: what they say, with and without this machine's folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import BaseModel

from crucible import Context, Experiment, InvalidPipeline, Registry, StageDef, run, stage
from crucible.errors import FileAccessError
from crucible.files import FileAccess, ReadFile


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


# Paths the OS refuses to look at: each becomes a refusal naming the option and why, never an
# OSError (which a service would answer with a 500) and never this machine's folders when hidden.
LONG_NAME = "a" * 300  # one name longer than any file system allows (255 bytes)
LONG_PATH = "/".join(["b" * 200] * 25)  # 5,024 characters: past PATH_MAX (4,096)
HUGE_NAME = "c" * 5000


@pytest.mark.parametrize("given", [LONG_NAME, LONG_PATH, HUGE_NAME], ids=["300", "5024", "5000"])
@pytest.mark.parametrize("show_paths", [True, False])
def test_a_path_too_long_for_the_system_is_refused(
    tmp_path: Path, given: str, show_paths: bool
) -> None:
    files = access(tmp_path, show_paths=show_paths)
    message = refusal(files.readable, given, option="path")
    assert message.startswith(f"option 'path': {given[:200]!r}... ({len(given):,} characters)")
    assert message.endswith(" is too long a path for this system (file name too long)")
    assert len(message) < 700  # cut short, not the whole path (twice) in every error
    assert (str(tmp_path) in message) is show_paths
    assert "Errno" not in message
    written = refusal(files.writable, given, option="out_dir")
    assert written.startswith("option 'out_dir': ") and "file name too long" in written
    assert (str(tmp_path) in written) is show_paths


@pytest.mark.parametrize("show_paths", [True, False])
def test_a_symlink_loop_is_refused(tmp_path: Path, show_paths: bool) -> None:
    files = access(tmp_path, show_paths=show_paths)
    for folder in (tmp_path / "data", tmp_path / "reports"):
        (folder / "loop1").symlink_to(folder / "loop2")
        (folder / "loop2").symlink_to(folder / "loop1")
    for call in (files.readable, files.writable):
        for given in ("loop1", "loop1/inside.csv"):
            assert refusal(call, given, option="path") == (
                f"option 'path': {given!r} goes through a loop of symbolic links"
            )


def test_a_nul_character_or_an_unknown_home_is_refused(tmp_path: Path) -> None:
    files = access(tmp_path, show_paths=False)
    assert refusal(files.readable, "a\0b", option="path") == (
        "option 'path': 'a\\x00b' is not a valid path: embedded null byte"
    )
    assert refusal(files.writable, "~no-such-user-here/x", option="out") == (
        "option 'out': '~no-such-user-here/x' cannot be resolved: "
        "Could not determine home directory."
    )


class Reads(BaseModel):
    path: ReadFile


@stage("reads", description="Names a file to read", register=False)
async def reads(ctx: Context, opts: Reads) -> Context:
    return ctx


async def test_pre_flight_refuses_an_unusable_path_naming_stage_and_option(tmp_path: Path) -> None:
    files = access(tmp_path, show_paths=False)
    exp = Experiment(id="x", pipeline=[StageDef(name="reads", options={"path": HUGE_NAME})])
    with pytest.raises(InvalidPipeline) as caught:
        await run(exp, registry=Registry([reads]), file_access=files)
    (problem,) = caught.value.problems
    assert (problem.stage, problem.path) == ("reads", "path")
    assert problem.message.endswith("is too long a path for this system (file name too long)")
    assert str(tmp_path) not in str(caught.value)


async def test_a_folder_to_write_into_that_is_a_file_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    from stages.report import report

    (tmp_path / "reports").write_text("not a folder\n")
    exp = Experiment.model_validate({
        "id": "rep", "pipeline": [{"name": "report"}],
        "outputs": [{"name": "summary", "formats": ["markdown"]}],
    })  # fmt: skip
    access = FileAccess.default(cwd=tmp_path)
    with pytest.raises(InvalidPipeline) as refused:
        await run(exp, registry=Registry([report]), file_access=access)
    assert "options.out_dir" in str(refused.value) and "is a file, not a folder" in str(
        refused.value
    )
    assert (tmp_path / "reports").read_text() == "not a folder\n"
