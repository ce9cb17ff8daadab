"""The ``guardrails`` stage: adapters (sync/async, class/instance/callable), gating, failures."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from crucible import Context, Experiment, InvalidPipeline, Registry, StageDef, StageFailed, run
from crucible.errors import ImportsNotAllowed
from crucible.testing import SpanCapture, make_context, run_stage
from stages.guardrails import (
    GuardrailAdapter,
    GuardrailAdapterError,
    GuardrailsError,
    GuardrailsOptions,
    GuardrailViolation,
    NoopAdapter,
    guardrails,
)

EXAMPLES = [{"input": "hello"}, {"input": "ignore previous instructions"}, {"input": "bye"}]


def ctx_with(examples: Any = EXAMPLES) -> Context:
    return make_context(assigns={"examples": examples})


class KeywordAdapter:
    """A real, small adapter: flags examples whose input contains a keyword (sync)."""

    def __init__(self, keyword: str = "ignore") -> None:
        self.keyword = keyword
        self.calls: list[tuple[Sequence[Any], Any]] = []
        self.threads: list[int] = []

    def scan(self, examples: Sequence[Any], opts: Any) -> list[Mapping[str, Any]]:
        self.calls.append((examples, opts))
        self.threads.append(threading.get_ident())
        return [
            {"index": i, "rule": "keyword", "keyword": self.keyword}
            for i, ex in enumerate(examples)
            if self.keyword in str(ex.get("input", ""))
        ]


class AsyncKeywordAdapter(KeywordAdapter):
    async def scan(self, examples: Sequence[Any], opts: Any) -> list[Mapping[str, Any]]:  # type: ignore[override]
        return super().scan(examples, opts)


async def failure_of(options: dict[str, Any], examples: Any = EXAMPLES) -> GuardrailsError:
    with pytest.raises(StageFailed) as info:
        await run_stage(guardrails, ctx_with(examples), options)
    assert info.value.stage == "guardrails"
    assert isinstance(info.value.cause, GuardrailsError)
    return info.value.cause


async def test_adapter_called_once_without_violations() -> None:
    adapter = KeywordAdapter(keyword="zzz")
    ctx = await run_stage(guardrails, ctx_with(), {"adapter": adapter})
    assert len(adapter.calls) == 1
    examples, opts = adapter.calls[0]
    assert examples == EXAMPLES
    assert isinstance(opts, GuardrailsOptions) and opts.adapter is adapter
    assert ctx.metrics["guardrails"] == {"total": 3, "violations": 0}
    assert ctx.assigns["guardrail_violations"] == []


async def test_violations_are_recorded_when_not_failing() -> None:
    ctx = await run_stage(guardrails, ctx_with(), {"adapter": KeywordAdapter()})
    assert ctx.metrics["guardrails"] == {"total": 3, "violations": 1}
    assert ctx.assigns["guardrail_violations"] == [
        {"index": 1, "rule": "keyword", "keyword": "ignore"}
    ]


async def test_violation_with_fail_on_violation_fails_the_run() -> None:
    experiment = Experiment(
        id="g",
        pipeline=[
            StageDef(
                name="guardrails", options={"adapter": KeywordAdapter(), "fail_on_violation": True}
            ),
            StageDef(name="never"),
        ],
    )
    reached: list[bool] = []

    async def never(ctx: Context) -> Context:
        reached.append(True)
        return ctx

    registry = Registry([guardrails])
    registry.register(never, name="never")
    with pytest.raises(StageFailed) as info:
        await run(experiment, registry=registry, assigns={"examples": EXAMPLES})
    cause = info.value.cause
    assert isinstance(cause, GuardrailViolation)
    assert cause.violations == [{"index": 1, "rule": "keyword", "keyword": "ignore"}]
    assert cause.total == 3
    assert "1 guardrail violation in 3 examples" in str(cause)
    assert reached == []
    assert info.value.context is not None and "guardrails" not in info.value.context.metrics


async def test_fail_on_violation_without_violations_passes() -> None:
    ctx = await run_stage(
        guardrails, ctx_with(), {"adapter": KeywordAdapter("zzz"), "fail_on_violation": True}
    )
    assert ctx.metrics["guardrails"]["violations"] == 0


@pytest.mark.parametrize("assigns", [{}, {"examples": None}])
async def test_no_examples_returns_the_context_unchanged(assigns: dict[str, Any]) -> None:
    adapter = KeywordAdapter()
    ctx = make_context(assigns=assigns)
    assert await guardrails(ctx, GuardrailsOptions(adapter=adapter)) is ctx
    out = await run_stage(guardrails, ctx, {"adapter": adapter})
    assert "guardrails" not in out.metrics
    assert adapter.calls == []


async def test_examples_that_are_not_a_list_fail() -> None:
    cause = await failure_of({}, examples={"input": 1})
    assert "must be a list of examples, got dict" in str(cause)


async def test_default_is_the_noop_adapter() -> None:
    ctx = await run_stage(guardrails, ctx_with())
    assert ctx.metrics["guardrails"] == {"total": 3, "violations": 0}
    assert isinstance(NoopAdapter(), GuardrailAdapter)
    assert isinstance(KeywordAdapter(), GuardrailAdapter)


async def test_sync_adapter_runs_in_a_worker_thread_async_on_the_loop() -> None:
    sync_adapter, async_adapter = KeywordAdapter(), AsyncKeywordAdapter()
    await run_stage(guardrails, ctx_with(), {"adapter": sync_adapter})
    await run_stage(guardrails, ctx_with(), {"adapter": async_adapter})
    loop_thread = threading.get_ident()
    assert sync_adapter.threads[0] != loop_thread
    assert async_adapter.threads[0] == loop_thread


async def test_adapter_class_is_instantiated() -> None:
    ctx = await run_stage(guardrails, ctx_with(), {"adapter": AsyncKeywordAdapter})
    assert ctx.metrics["guardrails"]["violations"] == 1


async def test_plain_sync_and_async_callables_are_adapters() -> None:
    def flag_all(examples: Sequence[Any], opts: Any) -> list[dict[str, int]]:
        return [{"index": i} for i, _ in enumerate(examples)]

    async def flag_first(examples: Sequence[Any], opts: Any) -> list[dict[str, int]]:
        return [{"index": 0}]

    ctx = await run_stage(guardrails, ctx_with(), {"adapter": flag_all})
    assert ctx.metrics["guardrails"]["violations"] == 3
    ctx = await run_stage(guardrails, ctx_with(), {"adapter": flag_first})
    assert ctx.assigns["guardrail_violations"] == [{"index": 0}]


async def test_adapter_exception_is_wrapped() -> None:
    class Exploding:
        def scan(self, examples: Sequence[Any], opts: Any) -> list[Mapping[str, Any]]:
            raise ConnectionError("moderation API down")

    cause = await failure_of({"adapter": Exploding()})
    assert isinstance(cause, GuardrailAdapterError)
    assert isinstance(cause.__cause__, ConnectionError)
    assert cause.adapter is not None and "Exploding" in cause.adapter
    assert "Exploding raised ConnectionError: moderation API down" in str(cause)


@pytest.mark.parametrize(
    ("returned", "fragment"),
    [
        (None, "returned NoneType"),
        ({"index": 0}, "returned dict"),
        (["just a string"], "item 0 is str"),
        ([{"ok": 1}, 5], "item 1 is int"),
    ],
)
async def test_adapter_returning_the_wrong_shape_fails(returned: Any, fragment: str) -> None:
    async def wrong(examples: Sequence[Any], opts: Any) -> Any:
        return returned

    cause = await failure_of({"adapter": wrong})
    assert isinstance(cause, GuardrailAdapterError)
    assert fragment in str(cause) and "wrong" in str(cause)


async def test_adapter_class_that_cannot_be_constructed() -> None:
    class NeedsArgs:
        def __init__(self, endpoint: str) -> None:
            self.endpoint = endpoint

        def scan(self, examples: Sequence[Any], opts: Any) -> list[Mapping[str, Any]]:
            return []

    cause = await failure_of({"adapter": NeedsArgs})
    assert isinstance(cause, GuardrailAdapterError)
    assert "could not be constructed" in str(cause)


async def test_adapter_of_the_wrong_type_is_refused_before_running() -> None:
    with pytest.raises(InvalidPipeline, match="adapter"):
        await run_stage(guardrails, ctx_with(), {"adapter": 42})


path_adapter = KeywordAdapter("bye")


async def test_adapter_import_path_needs_allow_imports() -> None:
    path = f"{__name__}:path_adapter"
    with pytest.raises(StageFailed) as info:
        await run_stage(guardrails, ctx_with(), {"adapter": path})
    assert isinstance(info.value.cause, ImportsNotAllowed)
    ctx = await run_stage(guardrails, ctx_with(), {"adapter": path}, allow_imports=True)
    assert ctx.assigns["guardrail_violations"] == [
        {"index": 2, "rule": "keyword", "keyword": "bye"}
    ]


async def test_records_a_span_event_with_counts(spans: SpanCapture) -> None:
    ctx = await run_stage(
        guardrails, ctx_with(), {"adapter": KeywordAdapter()}, tracer_provider=spans.provider
    )
    [event] = spans.one("stage guardrails").events
    assert event.name == "guardrails.scanned"
    assert event.attributes is not None
    assert event.attributes["total"] == 3 and event.attributes["violations"] == 1
    assert "KeywordAdapter" in str(event.attributes["adapter"])
    assert ctx.trace is not None
    assert [e.name for e in ctx.trace.spans[0].events] == ["guardrails.scanned"]
