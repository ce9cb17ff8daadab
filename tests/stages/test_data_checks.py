"""The ``data_checks`` stage: missing fields, order, fail_fast, gating, custom checkers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from crucible import Context, InvalidPipeline, StageFailed
from crucible.registry import ImportsNotAllowed
from crucible.testing import SpanCapture, make_context, run_stage
from stages.data_checks import (
    FLAGGED_LIMIT,
    DataChecksFailed,
    DataChecksOptions,
    data_checks,
    find_missing,
)


def ctx_with(examples: Any) -> Context:
    return make_context(assigns={"examples": examples})


async def failure_of(examples: Any, options: dict[str, Any]) -> DataChecksFailed:
    with pytest.raises(StageFailed) as info:
        await run_stage(data_checks, ctx_with(examples), options)
    assert info.value.stage == "data_checks"
    assert isinstance(info.value.cause, DataChecksFailed)
    return info.value.cause


class CountingExample(Mapping[str, Any]):
    """An example that records that it was read."""

    def __init__(self, index: int, data: dict[str, Any], reads: list[int]) -> None:
        self.index = index
        self.data = data
        self.reads = reads

    def __getitem__(self, key: str) -> Any:
        self.reads.append(self.index)
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


async def test_one_of_two_examples_missing_output() -> None:
    examples = [{"input": "a", "output": "b"}, {"input": "c"}]
    ctx = await run_stage(data_checks, ctx_with(examples), {"required_fields": ["input", "output"]})
    assert ctx.metrics["data_checks"] == {
        "total": 2,
        "missing_required": 1,
        "missing_fields": 1,
        "required_fields": ["input", "output"],
        "flagged": [{"index": 1, "missing": ["output"]}],
        "headline": "1 of 2 examples flagged: #1 missing output",
    }
    assert ctx.assigns["data_issues"] == [
        {"index": 1, "example": {"input": "c"}, "missing": ["output"]}
    ]
    assert ctx.stage_completed("data_checks")


async def test_none_absent_and_empty_string_are_missing_but_falsy_values_are_not() -> None:
    examples = [
        {"input": None, "output": ""},
        {"input": 0, "output": False},
        {"output": "x"},
        {"input": [], "output": " "},
    ]
    ctx = await run_stage(data_checks, ctx_with(examples))
    issues = ctx.assigns["data_issues"]
    assert [i["index"] for i in issues] == [0, 2]
    assert issues[0]["missing"] == ["input", "output"]
    assert issues[1]["missing"] == ["input"]
    assert ctx.metrics["data_checks"]["missing_required"] == 2
    assert ctx.metrics["data_checks"]["missing_fields"] == 3


async def test_issues_are_in_example_order_and_fields_in_required_order() -> None:
    examples = [{"a": 1}, {"b": 1}, {"a": 1, "b": 1, "c": 1}, {}]
    ctx = await run_stage(data_checks, ctx_with(examples), {"required_fields": ["c", "b", "a"]})
    issues = ctx.assigns["data_issues"]
    assert [i["index"] for i in issues] == [0, 1, 3]
    assert issues[0]["missing"] == ["c", "b"]
    assert issues[2]["missing"] == ["c", "b", "a"]
    assert ctx.metrics["data_checks"]["missing_fields"] == 7


async def test_default_required_fields_are_input_and_output() -> None:
    ctx = await run_stage(data_checks, ctx_with([{"input": 1}]))
    assert ctx.metrics["data_checks"]["required_fields"] == ["input", "output"]


async def test_example_that_is_not_a_mapping_is_an_issue() -> None:
    ctx = await run_stage(data_checks, ctx_with([{"input": 1, "output": 2}, "plain", 7]))
    issues = ctx.assigns["data_issues"]
    assert [i["index"] for i in issues] == [1, 2]
    assert issues[0]["error"] == "not a mapping (got str)"
    assert issues[0]["missing"] == ["input", "output"]
    assert issues[1]["error"] == "not a mapping (got int)"


async def test_fail_fast_fails_with_the_first_issue() -> None:
    examples = [{"input": 1, "output": 2}, {"input": 1}, {"output": 2}]
    cause = await failure_of(examples, {"fail_fast": True})
    assert cause.issues == [{"index": 1, "example": {"input": 1}, "missing": ["output"]}]
    assert "example 1" in str(cause) and "output" in str(cause)


async def test_fail_fast_really_stops_at_the_first_issue() -> None:
    reads: list[int] = []
    examples = [CountingExample(i, {"input": 1}, reads) for i in range(5)]
    cause = await failure_of(examples, {"fail_fast": True, "required_fields": ["input", "output"]})
    assert cause.issues[0]["index"] == 0
    assert set(reads) == {0}


async def test_without_fail_fast_every_example_is_scanned() -> None:
    reads: list[int] = []
    examples = [CountingExample(i, {"input": 1}, reads) for i in range(5)]
    ctx = await run_stage(data_checks, ctx_with(examples))
    assert set(reads) == set(range(5))
    assert ctx.metrics["data_checks"]["missing_required"] == 5


async def test_fail_fast_without_issues_passes() -> None:
    ctx = await run_stage(data_checks, ctx_with([{"input": 1, "output": 2}]), {"fail_fast": True})
    assert ctx.metrics["data_checks"]["missing_required"] == 0
    assert ctx.assigns["data_issues"] == []


@pytest.mark.parametrize("assigns", [{}, {"examples": None}])
async def test_no_examples_returns_the_context_unchanged(assigns: dict[str, Any]) -> None:
    ctx = make_context(assigns=assigns)
    assert await data_checks(ctx, DataChecksOptions(fail_fast=True)) is ctx
    out = await run_stage(data_checks, ctx)
    assert "data_checks" not in out.metrics and "data_issues" not in out.assigns


@pytest.mark.parametrize(
    ("examples", "type_name"), [("abc", "str"), ({"input": 1}, "dict"), (5, "int")]
)
async def test_examples_that_are_not_a_list_fail(examples: Any, type_name: str) -> None:
    cause = await failure_of(examples, {})
    assert f"must be a list of examples, got {type_name}" in str(cause)


async def test_a_tuple_of_examples_is_accepted() -> None:
    ctx = await run_stage(data_checks, ctx_with(({"input": 1, "output": 2}, {})))
    assert ctx.metrics["data_checks"]["total"] == 2
    assert ctx.metrics["data_checks"]["missing_required"] == 1


async def test_sync_custom_checker_replaces_the_builtin_check() -> None:
    seen: list[tuple[Sequence[Any], DataChecksOptions]] = []

    def checker(examples: Sequence[Any], opts: DataChecksOptions) -> list[dict[str, Any]]:
        seen.append((examples, opts))
        return [{"index": 0, "missing": ["label", "score"]}, {"index": 1, "reason": "too long"}]

    examples = [{"input": 1, "output": 2}, {"input": 3, "output": 4}]
    ctx = await run_stage(data_checks, ctx_with(examples), {"checker": checker})
    assert seen[0][0] == examples and isinstance(seen[0][1], DataChecksOptions)
    assert len(ctx.assigns["data_issues"]) == 2
    assert ctx.metrics["data_checks"] == {
        "total": 2,
        "missing_required": 2,
        "missing_fields": 2,
        "required_fields": ["input", "output"],
        "flagged": [{"index": 0, "missing": ["label", "score"]}, {"index": 1, "error": "too long"}],
        "headline": "2 of 2 examples flagged: #0 missing label, score; #1 too long",
    }


async def test_async_custom_checker_and_fail_fast() -> None:
    async def checker(examples: Sequence[Any], opts: DataChecksOptions) -> list[str]:
        return [f"bad {i}" for i, _ in enumerate(examples)]

    cause = await failure_of([{}, {}], {"checker": checker, "fail_fast": True})
    assert cause.issues == ["bad 0"]


async def test_checker_that_raises_is_wrapped() -> None:
    def checker(examples: Sequence[Any], opts: DataChecksOptions) -> list[Any]:
        raise ValueError("checker broke")

    cause = await failure_of([{}], {"checker": checker})
    assert isinstance(cause.__cause__, ValueError)
    assert "checker" in str(cause) and "ValueError: checker broke" in str(cause)


@pytest.mark.parametrize("returned", [None, {"index": 0}, ("a",)])
async def test_checker_returning_a_non_list_fails(returned: Any) -> None:
    def checker(examples: Sequence[Any], opts: DataChecksOptions) -> Any:
        return returned

    cause = await failure_of([{}], {"checker": checker})
    assert f"returned {type(returned).__name__}" in str(cause)
    assert "expected a list of issues" in str(cause)


def path_checker(examples: Sequence[Any], opts: DataChecksOptions) -> list[str]:
    return ["from path"]


async def test_checker_import_path_needs_allow_imports() -> None:
    path = f"{__name__}:path_checker"
    with pytest.raises(StageFailed) as info:
        await run_stage(data_checks, ctx_with([{}]), {"checker": path})
    assert isinstance(info.value.cause, ImportsNotAllowed)
    ctx = await run_stage(data_checks, ctx_with([{}]), {"checker": path}, allow_imports=True)
    assert ctx.assigns["data_issues"] == ["from path"]


async def test_checker_of_the_wrong_type_is_refused_before_running() -> None:
    with pytest.raises(InvalidPipeline, match="checker"):
        await run_stage(data_checks, ctx_with([{}]), {"checker": 42})


async def test_records_a_span_event(spans: SpanCapture) -> None:
    await run_stage(
        data_checks, ctx_with([{"input": 1}, {}, {"input": 1, "output": 1}]),
        tracer_provider=spans.provider,
    )  # fmt: skip
    [event] = spans.one("stage data_checks").events
    assert event.name == "data_checks.checked"
    assert event.attributes is not None and dict(event.attributes) == {"total": 3, "issues": 2}


def test_find_missing_is_pure_and_ordered() -> None:
    examples = [{}, {"input": 1, "output": 1}, {"output": ""}]
    assert [i["index"] for i in find_missing(examples, ["input", "output"])] == [0, 2]
    assert [i["index"] for i in find_missing(examples, ["input"], fail_fast=True)] == [0]


async def test_flagged_rows_name_index_and_id_bounded_without_example_bodies() -> None:
    examples: list[Any] = [
        {"id": f"q{i}", "input": "x" * 500, "output": "" if i % 2 else "y"} for i in range(60)
    ]
    examples[3] = "not a mapping"
    ctx = await run_stage(data_checks, ctx_with(examples), {"required_fields": ["input", "output"]})
    metric = ctx.metrics["data_checks"]
    assert metric["missing_required"] == 30  # the odd rows (3 is a string)
    flagged = metric["flagged"]
    assert len(flagged) == FLAGGED_LIMIT == 20
    assert flagged[0] == {"index": 1, "id": "q1", "missing": ["output"]}
    assert flagged[1] == {
        "index": 3,
        "missing": ["input", "output"],
        "error": "not a mapping (got str)",
    }
    assert [f["index"] for f in flagged[2:5]] == [5, 7, 9]
    assert "x" * 100 not in repr(flagged)  # the examples themselves stay in assigns only
    assert len(ctx.assigns["data_issues"]) == 30
    assert metric["headline"] == (
        "30 of 60 examples flagged: #1 (id q1) missing output; #3 missing input, output; "
        "#5 (id q5) missing output; 27 more"
    )


async def test_headline_when_every_example_is_complete() -> None:
    ctx = await run_stage(data_checks, ctx_with([{"input": 1, "output": 2}]), {})
    assert ctx.metrics["data_checks"]["headline"] == "the example has input, output"
    assert ctx.metrics["data_checks"]["flagged"] == []
