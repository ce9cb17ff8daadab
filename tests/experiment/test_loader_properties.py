"""Property tests: whatever an experiment file holds, ``load_experiment`` returns an Experiment or
raises ExperimentFileError (nothing else escapes), and valid documents load in every format."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crucible import Experiment, ExperimentFileError, load_experiment
from crucible.experiment import DocumentLimits, experiment_from_mapping
from crucible.experiment.limits import structure_problem

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SUFFIXES = (".yaml", ".json", ".toml")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


def load_or_refusal(path: Path, **kwargs: Any) -> Experiment | ExperimentFileError:
    """The loaded Experiment or the ExperimentFileError; any other exception fails the test."""
    try:
        return load_experiment(path, **kwargs)
    except ExperimentFileError as err:
        assert err.path == path.name
        assert err.errors and all(isinstance(e, str) and e for e in err.errors)
        return err


def put(folder: Path, suffix: str, content: str | bytes) -> Path:
    path = folder / f"doc{suffix}"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# --- documents -------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except that DEL must be escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


DUMPERS: dict[str, Callable[[dict[str, Any]], str]] = {
    ".yaml": lambda data: yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
    ".json": json.dumps,
    ".toml": lambda data: "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in data.items()),
}

# PyYAML's emitter writes these line breaks raw inside quotes, where its reader folds them:
# yaml.safe_dump itself does not round-trip them, so valid documents leave them out.
TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x85\u2028\u2029")
KEYS = st.text(TEXT, max_size=8)


def nested(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
        max_leaves=16,
    )


TOML_SCALARS = (
    st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(TEXT, max_size=12)
)
DATA = {".toml": nested(TOML_SCALARS), ".yaml": nested(st.none() | TOML_SCALARS)}
DATA[".json"] = DATA[".yaml"]


def experiments(data: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    stage = st.fixed_dictionaries(
        {"name": st.text(TEXT, min_size=1, max_size=8)},
        optional={
            "options": st.dictionaries(KEYS, data, max_size=3),
            "enabled": st.booleans(),
            "retries": st.integers(0, 3),
            "timeout": st.floats(0.1, 100),
        },
    )
    return st.fixed_dictionaries(
        {"id": st.text(TEXT, min_size=1, max_size=12)},
        optional={
            "pipeline": st.lists(stage, max_size=3),
            "metadata": st.dictionaries(KEYS, data, max_size=4),
            "tags": st.lists(st.text(TEXT, max_size=6), max_size=3),
            "description": st.text(TEXT, max_size=30),
        },
    )


def documents() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(suffix, experiment data) for a valid experiment in that format."""
    return st.sampled_from(SUFFIXES).flatmap(
        lambda suffix: st.tuples(st.just(suffix), experiments(DATA[suffix]))
    )


# Pieces of every format's syntax, hostile scalars and odd characters, to assemble at random.
FRAGMENTS = [
    *"{}[]:,-=.'\"#?|>!&*\\\n\t ",
    "  ",
    "id",
    "pipeline",
    "name",
    "metadata",
    "created_at",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "!!int ",
    "!!bool ",
    "!!timestamp ",
    "!!binary ",
    "!!set ",
    "!!omap ",
    "!!python/object/apply:os.system ",
    "!custom ",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    '"""',
    "'''",
    "2024-13-45",
    "2024-02-30T25:61:00Z",
    "1979-05-27T07:32:00Z",
    "1.5",
    "0x1F",
    "0o17",
    "1_000",
    "1e999",
    ".nan",
    "nan",
    "inf",
    "true",
    "null",
    "~",
    "9" * 5000,
    "\\u0000",
    "\\ud800",
    "\x00",
    "\x07",
    "\x85",
    "\u2028",
    "\ufeff",
    "é",
    "\U0001f600",
]
HOSTILE_TEXT = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)


# --- properties ------------------------------------------------------------------------------


@PROPERTY
@given(doc=documents())
def test_valid_documents_load_in_every_format(
    folder: Path, doc: tuple[str, dict[str, Any]]
) -> None:
    suffix, data = doc
    loaded = load_experiment(put(folder, suffix, DUMPERS[suffix](data)))
    assert loaded == experiment_from_mapping(data)


@PROPERTY
@given(suffix=st.sampled_from(SUFFIXES), text=HOSTILE_TEXT)
def test_random_syntax_is_loaded_or_refused(folder: Path, suffix: str, text: str) -> None:
    load_or_refusal(put(folder, suffix, text))


@PROPERTY
@given(suffix=st.sampled_from(SUFFIXES), content=st.binary(max_size=300))
def test_random_bytes_are_loaded_or_refused(folder: Path, suffix: str, content: bytes) -> None:
    load_or_refusal(put(folder, suffix, content))


@PROPERTY
@given(
    doc=documents(),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.sampled_from(FRAGMENTS)),
        min_size=1,
        max_size=4,
    ),
)
def test_damaged_documents_are_loaded_or_refused(
    folder: Path, doc: tuple[str, dict[str, Any]], edits: list[tuple[int, int, str]]
) -> None:
    suffix, data = doc
    text = DUMPERS[suffix](data)
    for at, cut, insert in edits:  # delete a few characters somewhere, insert a fragment there
        at %= len(text) + 1
        text = text[:at] + insert + text[at + cut :]
    load_or_refusal(put(folder, suffix, text))


BRACKETS = {
    ".yaml": ("id: x\nmetadata:\n  m: ", ("[", "]"), ("{k: ", "}"), ""),
    ".json": ('{"id": "x", "metadata": {"m": ', ("[", "]"), ('{"k": ', "}"), "}}"),
    ".toml": ('id = "x"\n[metadata]\nm = ', ("[", "]"), ("{k = ", "}"), ""),
}


@PROPERTY
@given(
    suffix=st.sampled_from(SUFFIXES),
    kinds=st.lists(st.booleans(), max_size=200),
    closed=st.booleans(),
)
def test_nesting_loads_up_to_the_limit_and_is_refused_beyond(
    folder: Path, suffix: str, kinds: list[bool], closed: bool
) -> None:
    head, array, table, tail = BRACKETS[suffix]
    opens = "".join(array[0] if is_array else table[0] for is_array in kinds)
    closes = "".join(array[1] if is_array else table[1] for is_array in reversed(kinds))
    text = head + opens + "1" + (closes + tail if closed else "") + "\n"
    result = load_or_refusal(put(folder, suffix, text))
    depth = 2 + len(kinds)  # the top level, metadata, then each bracket
    if depth > 64:
        assert isinstance(result, ExperimentFileError)
        assert "nest" in str(result)
    elif closed:
        assert isinstance(result, Experiment)


@st.composite
def anchored_yaml(draw: st.DrawFn) -> str:
    """Definitions ``dN: &aN [...]`` whose items alias any definition, earlier (expansion, up to
    bombs), itself or later (recursion, undefined aliases), or merge one into a mapping."""
    count = draw(st.integers(1, 12))
    lines = ["id: anchors", "metadata:"]
    for n in range(count):
        refs = st.integers(0, count).map(lambda j: f"*a{j}")
        items = draw(st.lists(refs | st.sampled_from(["1", "x", "{k: v}"]), max_size=10))
        if draw(st.booleans()):
            lines.append(f"  d{n}: &a{n} [{', '.join(items)}]")
        else:
            merged = draw(refs)
            lines.append(f"  d{n}: &a{n} {{<<: {merged}, k{n}: {', '.join(items) or 0}}}")
    return "\n".join(lines) + "\n"


@PROPERTY
@given(text=anchored_yaml())
def test_anchors_and_aliases_are_expanded_within_budget_or_refused(folder: Path, text: str) -> None:
    limits = DocumentLimits(max_nodes=5_000)
    result = load_or_refusal(put(folder, ".yaml", text), limits=limits)
    if isinstance(result, Experiment):  # within budget: exactly what PyYAML expands it to
        assert result.metadata == yaml.safe_load(text)["metadata"]


@PROPERTY
@given(
    doc=documents(),
    depth=st.integers(1, 6),
    nodes=st.integers(1, 80),
    chars=st.integers(1, 12),
)
def test_configured_limits_hold_in_every_format(
    folder: Path, doc: tuple[str, dict[str, Any]], depth: int, nodes: int, chars: int
) -> None:
    suffix, data = doc
    limits = DocumentLimits(max_depth=depth, max_nodes=nodes, max_scalar_chars=chars)
    result = load_or_refusal(put(folder, suffix, DUMPERS[suffix](data)), limits=limits)
    exceeds = structure_problem(data, limits) is not None
    if suffix == ".yaml":  # YAML also bounds the text of numbers, so it may refuse more
        assert not (exceeds and isinstance(result, Experiment))
    else:
        assert exceeds == isinstance(result, ExperimentFileError)


def has_cycle(value: Any, inside: frozenset[int] = frozenset()) -> bool:
    """Whether ``value`` contains itself (a plain recursive walk; the test data is small)."""
    if not isinstance(value, dict | list):
        return False
    if id(value) in inside:
        return True
    children = value.values() if isinstance(value, dict) else value
    return any(has_cycle(child, inside | {id(value)}) for child in children)


@st.composite
def tangled(draw: st.DrawFn) -> dict[str, Any]:
    """Experiment data in which some containers also hold others: shared values, and cycles
    when a container ends up holding one that holds it."""
    metadata = draw(st.dictionaries(KEYS, DATA[".json"], min_size=1, max_size=4))
    containers: list[Any] = []

    def collect(value: Any) -> None:
        if isinstance(value, dict | list):
            containers.append(value)
            for child in value.values() if isinstance(value, dict) else value:
                collect(child)

    collect(metadata)
    for _ in range(draw(st.integers(0, 3))):
        holder, target = draw(st.sampled_from(containers)), draw(st.sampled_from(containers))
        if isinstance(holder, dict):
            holder[draw(KEYS)] = target
        else:
            holder.append(target)
    return {"id": "tangled", "metadata": metadata}


@PROPERTY
@given(data=tangled())
def test_parsed_data_with_shared_and_cyclic_values(data: dict[str, Any]) -> None:
    if has_cycle(data):
        with pytest.raises(ExperimentFileError, match="contains itself"):
            experiment_from_mapping(data, source="body")
    else:
        assert experiment_from_mapping(data, source="body").id == "tangled"
