"""Hostile experiment files and data: each is refused with ExperimentFileError, naming the file,
the field and the line, after bounded work (asserted through where the loader stopped and what
it allocated, never through the clock)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from crucible import ExperimentFileError, load_experiment
from crucible.experiment import DocumentLimits, experiment_from_mapping
from crucible.experiment.loading import DEFAULT_MAX_BYTES, MAX_BYTES_ENV
from crucible.experiment.yaml_safe import LOADERS, PurePythonLoader, load_yaml

MiB = 1024 * 1024


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def refusal(path: Path, **kwargs: Any) -> str:
    with pytest.raises(ExperimentFileError) as info:
        load_experiment(path, **kwargs)
    assert info.value.path == path.name
    return str(info.value)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": each level is a list of ``width`` aliases of the one before."""
    lines = ["id: bomb", "metadata:", '  l0: &l0 ["lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"  l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.fixture(params=LOADERS, ids=lambda loader: loader.__name__)
def yaml_loader(request: pytest.FixtureRequest) -> Any:
    """Each YAML loader this PyYAML offers (libyaml's parser and the pure-Python one)."""
    return request.param


# --- YAML aliases ----------------------------------------------------------------------------


def test_alias_bomb_is_refused_while_composing(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        message = refusal(write(tmp_path, "bomb.yaml", alias_bomb()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Each *l5 stands for 125,479 values; the seventh on l6's line passes one million, and the
    # loader stopped right there, having built only the few nodes the file spells out.
    assert message == (
        "bomb.yaml: line 9, column 42: metadata.l6[6]: alias *l5 takes the document past "
        "1,000,000 values (an alias counts every value it stands for, each time it is used)"
    )
    assert peak < 5 * MiB


def test_alias_budget_is_configurable(yaml_loader: Any) -> None:
    with pytest.raises(ExperimentFileError, match=r"line 6, .*metadata\.l3\[1\]: alias \*l2"):
        load_yaml(
            alias_bomb(), source="b.yaml", limits=DocumentLimits(max_nodes=500), loader=yaml_loader
        )


def test_self_referential_yaml_is_refused(tmp_path: Path, yaml_loader: Any) -> None:
    with pytest.raises(ExperimentFileError) as info:
        load_yaml("id: x\nmetadata: &a {x: *a}\n", source="self.yaml", loader=yaml_loader)
    assert str(info.value) == (
        "self.yaml: line 2, column 18: metadata.x: alias *a is used inside the value it names "
        "(a recursive structure)"
    )


def test_recursion_through_a_nested_alias_is_refused(tmp_path: Path) -> None:
    text = "id: x\nmetadata: &top\n  a: [1, {b: [*top]}]\n"
    assert "metadata.a[1].b[0]: alias *top is used inside" in refusal(
        write(tmp_path, "r.yaml", text)
    )


def test_sensible_anchors_and_merge_keys_still_work(tmp_path: Path, yaml_loader: Any) -> None:
    text = (
        "id: shared\n"
        "metadata:\n"
        "  defaults: &defaults {timeout: 3, retries: 1}\n"
        "pipeline:\n"
        "  - {name: a, <<: *defaults}\n"
        "  - name: b\n"
        "    <<: *defaults\n"
        "    retries: 2\n"
        "  - name: c\n"
        "    options: &opts {alpha: 0.05, tests: [ttest]}\n"
        "  - {name: d, options: *opts}\n"
    )
    exp = load_experiment(write(tmp_path, "shared.yaml", text))
    assert [(sd.name, sd.timeout, sd.retries) for sd in exp.pipeline[:2]] == [
        ("a", 3.0, 1),
        ("b", 3.0, 2),
    ]
    assert exp.pipeline[3].options == exp.pipeline[2].options == {"alpha": 0.05, "tests": ["ttest"]}
    assert load_yaml(text, source="s.yaml", loader=yaml_loader) == load_yaml(
        text, source="s.yaml", loader=PurePythonLoader
    )


# --- nesting depth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("deep.json", '{"id": "x", "metadata": {"a": ' + "[" * 100_000, "line 1, column 93"),
        ("deep.toml", 'id = "x"\nm = ' + "[" * 100_000, "line 2, column 69"),
        ("deep.toml", 'id = "x"\nm = ' + "{a = " * 100_000, "line 2, column 325"),
    ],
)
def test_deep_brackets_are_refused_at_the_first_bracket_too_many(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    assert refusal(write(tmp_path, name, text)) == f"{name}: {where}: nested deeper than 64 levels"


def test_deep_yaml_is_refused(yaml_loader: Any) -> None:
    with pytest.raises(ExperimentFileError) as info:
        load_yaml("id: x\nm: " + "[" * 100_000, source="deep.yaml", loader=yaml_loader)
    if yaml_loader is PurePythonLoader:
        expected = "line 2, column 67: m[0][0][0][0][0][0][0]...: nested deeper than 64 levels"
    else:  # libyaml's scanner reads ahead and stops at its own limit of 1,000 first
        expected = (
            "line 2, column 1003: invalid YAML: while increasing flow level, "
            "exceeded maximum nesting depth"
        )
    assert str(info.value) == f"deep.yaml: {expected}"
    with pytest.raises(ExperimentFileError) as info:
        load_yaml("id: x\nm: " + "[" * 65, source="deep.yaml", loader=yaml_loader)
    assert "line 2, column 67: m[0][0][0][0][0][0][0]...: nested deeper than 64" in str(info.value)


def test_depth_is_configurable_and_counts_the_top_level(tmp_path: Path) -> None:
    limits = DocumentLimits(max_depth=3)
    ok = {"yaml": "id: x\nmetadata: {a: [1]}\n", "json": '{"id": "x", "metadata": {"a": [1]}}'}
    deep = {"yaml": "id: x\nmetadata: {a: [[1]]}\n", "json": '{"id": "x", "metadata": {"a": [[]]}}'}
    for fmt in ok:
        assert load_experiment(write(tmp_path, f"ok.{fmt}", ok[fmt]), limits=limits).metadata
        message = refusal(write(tmp_path, f"deep.{fmt}", deep[fmt]), limits=limits)
        assert "nested deeper than 3 levels" in message


def test_deep_toml_tables_and_dotted_keys_are_refused(tmp_path: Path) -> None:
    header = 'id = "x"\n[metadata.' + ".".join(["a"] * 100_000) + "]\n"
    dotted = 'id = "x"\nmetadata.' + ".".join(["a"] * 100_000) + " = 1\n"
    assert refusal(write(tmp_path, "h.toml", header)) == (
        "h.toml: line 2, column 2: a dotted key of 100,001 parts, deeper than 64 levels"
    )
    assert "line 2, column 1: a dotted key of 100,001 parts" in refusal(
        write(tmp_path, "d.toml", dotted)
    )
    # Within the key limit, the tables still nest too deep: the parsed data is checked as well.
    tables = 'id = "x"\n[metadata.' + ".".join(["a"] * 63) + "]\n"
    assert "metadata.a.a.a.a.a.a.a...: nested deeper than 64 levels" in refusal(
        write(tmp_path, "t.toml", tables)
    )


def test_dots_in_toml_values_strings_and_comments_are_not_keys(tmp_path: Path) -> None:
    text = (
        'id = "x"\n'
        'description = "a.b.c.d.e.f.g.h"  # i.j.k.l.m.n\n'
        "created_at = 1979-05-27T07:32:00.5Z\n"
        "[metadata]\n"
        "floats = [1.5, -2.25, 3.0e2]\n"
        '"a.b.c".d = 1\n'
    )
    exp = load_experiment(write(tmp_path, "dots.toml", text), limits=DocumentLimits(max_depth=3))
    assert exp.metadata == {"floats": [1.5, -2.25, 300.0], "a.b.c": {"d": 1}}


# --- values that cannot be built -------------------------------------------------------------


def test_invalid_timestamp_names_field_and_line(tmp_path: Path, yaml_loader: Any) -> None:
    text = "id: x\ncreated_at: 2024-13-45\n"
    assert refusal(write(tmp_path, "ts.yaml", text)) == (
        "ts.yaml: line 2, column 13: created_at: invalid timestamp '2024-13-45' "
        "(month must be in 1..12)"
    )
    with pytest.raises(
        ExperimentFileError, match=r"line 3, .*metadata\.when\[1\]: invalid timestamp '2024-02-30'"
    ):
        load_yaml(
            "id: x\nmetadata:\n  when: [2024-01-01, 2024-02-30]\n",
            source="n.yaml",
            loader=yaml_loader,
        )


@pytest.mark.parametrize(
    ("scalar", "problem"),
    [
        ("!!int ''", "invalid int ''"),
        ("!!bool maybe", "invalid bool 'maybe'"),
        ("!!timestamp soon", "invalid timestamp 'soon'"),
        ("!!float x", "invalid float 'x'"),
        ("1" * 5000, "invalid int '1111111111"),
    ],
)
def test_unbuildable_scalars_name_field_and_line(tmp_path: Path, scalar: str, problem: str) -> None:
    message = refusal(write(tmp_path, "s.yaml", f"id: x\nowner: {scalar}\n"))
    assert message.startswith(f"s.yaml: line 2, column 8: owner: {problem}")


def test_invalid_dates_in_json_and_toml_are_refused(tmp_path: Path) -> None:
    json_message = refusal(write(tmp_path, "ts.json", '{"id": "x", "created_at": "2024-13-45"}'))
    assert json_message.startswith("ts.json: created_at: Input should be a valid datetime")
    toml_message = refusal(write(tmp_path, "ts.toml", 'id = "x"\ncreated_at = 2024-12-45\n'))
    assert toml_message.startswith("ts.toml: invalid TOML") and "line 2" in toml_message


# --- duplicate keys --------------------------------------------------------------------------


def test_duplicate_yaml_keys_name_key_and_line(tmp_path: Path, yaml_loader: Any) -> None:
    top = "id: x\nowner: a\nid: y\n"
    assert refusal(write(tmp_path, "dup.yaml", top)) == (
        "dup.yaml: line 3, column 1: duplicate key 'id' (first on line 1)"
    )
    nested = "id: x\npipeline:\n  - name: a\n    retries: 1\n    name: b\n"
    with pytest.raises(ExperimentFileError) as info:
        load_yaml(nested, source="n.yaml", loader=yaml_loader)
    assert str(info.value) == (
        "n.yaml: line 5, column 5: pipeline[0]: duplicate key 'name' (first on line 3)"
    )


def test_equal_yaml_keys_of_different_spelling_are_duplicates(tmp_path: Path) -> None:
    text = "id: x\nmetadata:\n  1: a\n  0x1: b\n"
    assert "metadata: duplicate key '1' (first on line 3)" in refusal(
        write(tmp_path, "e.yaml", text)
    )


def test_merged_keys_may_be_overridden(tmp_path: Path) -> None:
    text = "id: x\nmetadata:\n  base: &b {k: 1}\n  over: {<<: *b, k: 2}\n"
    assert load_experiment(write(tmp_path, "m.yaml", text)).metadata == {
        "base": {"k": 1},
        "over": {"k": 2},
    }


def test_duplicate_json_keys_name_key_path_and_line(tmp_path: Path) -> None:
    text = (
        '{\n  "id": "x",\n  "pipeline": [\n    {"name": "a"},\n'
        '    {"name": "b",\n     "name": "c"}\n  ]\n}'
    )
    assert refusal(write(tmp_path, "dup.json", text)) == (
        "dup.json: line 6, column 6: pipeline[1]: duplicate key 'name' (first on line 5)"
    )
    escaped = '{"id": "x", "metadata": {"ab": 1, "a\\u0062": 2}}'
    assert "metadata: duplicate key 'ab'" in refusal(write(tmp_path, "esc.json", escaped))


def test_duplicate_toml_keys_are_refused_by_tomllib(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, "dup.toml", 'id = "x"\nowner = "a"\nid = "y"\n'))
    assert message == "dup.toml: invalid TOML: Cannot overwrite a value (at line 3, column 9)"


# --- the file itself -------------------------------------------------------------------------


def test_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.yaml"
    with sparse.open("wb") as f:
        f.truncate(100 * MiB)  # all NUL bytes: reading it would be refused for those instead
    assert refusal(sparse) == (
        f"huge.yaml: the file has {100 * MiB:,} bytes; larger than the limit of "
        f"{DEFAULT_MAX_BYTES:,} bytes (max_bytes=, {MAX_BYTES_ENV})"
    )


def test_size_limit_from_argument_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "e.yaml", "id: x\ndescription: " + "y" * 100 + "\n")
    assert "the file has 120 bytes; larger than the limit of 100 bytes" in refusal(
        path, max_bytes=100
    )
    monkeypatch.setenv(MAX_BYTES_ENV, "100")
    assert "limit of 100 bytes" in refusal(path)
    assert load_experiment(path, max_bytes=120).id == "x"  # the argument wins
    monkeypatch.setenv(MAX_BYTES_ENV, "ten megs")
    assert refusal(path) == (
        f"e.yaml: {MAX_BYTES_ENV}='ten megs' is not a positive whole number of bytes"
    )


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "latin1.yaml",
            "id: x\nowner: Andr\xe9\n".encode("latin-1"),
            "line 2, column 12: not UTF-8",
        ),
        ("nul.json", b'{"id": "x",\n "owner": "a\x00"}', "line 2, column 13: a NUL character"),
        ("nul.yaml", b"id: x\x00\n", "line 1, column 6: a NUL character"),
        ("empty.yaml", b"", "empty.yaml: the file is empty"),
        ("blank.toml", b"  \n\n", "the file is empty"),
        ("comments.yaml", b"# nothing here\n", "(top level): the document is empty"),
        ("list.json", b"[1, 2]", "(top level): expected a mapping, got list"),
        ("scalar.yaml", b"just text\n", "(top level): expected a mapping, got str"),
        ("ctrl.yaml", b"id: x\x07\n", "line 1, column 6: character U+0007 is not allowed in YAML"),
        ("png.toml", b"\x89PNG\r\n\x1a\n", "line 1, column 1: not UTF-8 text (byte 0x89)"),
    ],
)
def test_files_that_are_not_experiment_text(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    assert expected in refusal(write(tmp_path, name, content))


def test_a_directory_or_a_pipe_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "exp.yaml"
    folder.mkdir()
    assert refusal(folder) == "exp.yaml: is a directory, not an experiment file"
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # opening it would block until a writer came: refused before opening
    assert refusal(fifo) == "pipe.yaml: not a regular file"


def test_huge_scalars_are_refused(tmp_path: Path) -> None:
    blob = "z" * (2 * MiB)
    yaml_message = refusal(write(tmp_path, "s.yaml", f"id: x\ndescription: {blob}\n"))
    assert yaml_message == (
        "s.yaml: line 2, column 14: description: a value of 2,097,152 characters; "
        "the limit is 1,048,576"
    )
    json_message = refusal(
        write(tmp_path, "s.json", f'{{"id": "x", "metadata": {{"b": "{blob}"}}}}')
    )
    assert (
        json_message
        == "s.json: metadata.b: a value of 2,097,152 characters; the limit is 1,048,576"
    )
    key_message = refusal(write(tmp_path, "k.toml", f'id = "x"\n[metadata]\n"{blob}" = 1\n'))
    assert "metadata.zzzzzzzzzz" in key_message and "a value of 2,097,152 characters" in key_message
    small = DocumentLimits(max_scalar_chars=4)
    assert "tags[0]: a value of 5 characters; the limit is 4" in refusal(
        write(tmp_path, "o.yaml", "id: x\ntags: [alice]\n"), limits=small
    )


def test_huge_numbers_in_json_and_toml_are_refused(tmp_path: Path) -> None:
    digits = "9" * 5000
    assert "invalid JSON: Exceeds the limit (4300 digits)" in refusal(
        write(tmp_path, "n.json", f'{{"id": "x", "metadata": {{"n": {digits}}}}}')
    )
    assert "invalid TOML: Exceeds the limit (4300 digits)" in refusal(
        write(tmp_path, "n.toml", f'id = "x"\n[metadata]\nn = {digits}\n')
    )


# --- already-parsed data (request bodies, run(mapping)) --------------------------------------


def test_recursive_data_is_refused() -> None:
    metadata: dict[str, Any] = {"a": [1]}
    metadata["a"].append(metadata)
    with pytest.raises(ExperimentFileError) as info:
        experiment_from_mapping({"id": "x", "metadata": metadata}, source="body")
    assert (
        str(info.value) == "body: metadata.a[1]: the value contains itself (a recursive structure)"
    )


def test_shared_objects_count_each_time_they_appear() -> None:
    level: Any = ["lol"]
    for _ in range(12):  # 9**12 values written out: refused once the budget is spent
        level = [level] * 9
    with pytest.raises(ExperimentFileError) as info:
        experiment_from_mapping(
            {"id": "x", "metadata": {"bomb": level}}, limits=DocumentLimits(max_nodes=100_000)
        )
    assert str(info.value) == (
        "<experiment>: metadata.bomb[0][0][0][0][0][0]...: "
        "more than 100,000 values (shared objects count each time)"
    )
    shared = {"k": 1}
    exp = experiment_from_mapping({"id": "x", "metadata": {"a": shared, "b": shared}})
    assert exp.metadata == {"a": {"k": 1}, "b": {"k": 1}}


def test_deep_data_is_refused_without_recursion() -> None:
    deep: Any = "bottom"
    for _ in range(100_000):  # far deeper than Python's recursion limit
        deep = {"d": deep}
    with pytest.raises(ExperimentFileError) as info:
        experiment_from_mapping({"id": "x", "metadata": deep}, source="body")
    assert str(info.value) == "body: metadata.d.d.d.d.d.d.d...: nested deeper than 64 levels"


def test_limits_must_be_positive_ints() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_depth must be a positive int"):
            DocumentLimits(max_depth=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", '{"id": "x", "m": ' + "[" * 100_000),
        ("deep.toml", 'id = "x"\nm = ' + "[" * 100_000),
        ("deep.yaml", "id: x\nm: " + "[" * 900),
    ],
)
def test_a_depth_limit_beyond_the_parsers_own_is_still_an_error(
    tmp_path: Path, name: str, text: str
) -> None:
    limits = DocumentLimits(max_depth=1_000_000)
    message = refusal(write(tmp_path, name, text), limits=limits)
    assert "nested too deeply for the" in message and "lower max_depth" in message
