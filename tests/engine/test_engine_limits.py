"""Many retries, huge backoffs and errors the engine did not foresee: every run still ends,
failed and recorded in a real SQLite run store, with its run span finished."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.trace import StatusCode

from crucible import Context, Experiment, Registry, StageDef, StageFailed, run, stage
from crucible.engine.attempt import backoff as _backoff
from crucible.experiment.models import MAX_RETRIES, MAX_RETRY_DELAY_S
from crucible.store import RunStore
from crucible.testing import SpanCapture


class Unprintable(Exception):
    """An error whose message cannot be read: the engine's own bookkeeping trips over it."""

    def __str__(self) -> str:
        raise RuntimeError("this error has no message")


@stage("always_fails", description="Raises every time", register=False)
async def always_fails(ctx: Context) -> Context:
    raise KeyError("missing column")


@stage("unprintable", description="Raises an error whose str() raises", register=False)
async def unprintable(ctx: Context) -> Context:
    raise Unprintable()


@stage("exits", description="Calls sys.exit", register=False)
async def exits(ctx: Context) -> Context:
    sys.exit(3)


@stage("fine", description="Puts a metric", register=False)
async def fine(ctx: Context) -> Context:
    return ctx.put_metric("x", 1)


REG = Registry([always_fails, unprintable, exits, fine])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RunStore]:
    async with RunStore(tmp_path / "runs.db") as s:
        yield s


def test_backoff_saturates_at_the_cap_instead_of_overflowing() -> None:
    assert MAX_RETRY_DELAY_S == 60.0
    for attempt in (1, 2, 5):
        nominal = 0.5 * 2 ** (attempt - 1)
        assert 0.5 * nominal <= _backoff(0.5, attempt) <= 1.5 * nominal
    for base, attempt in [(0.5, 1025), (0.5, 10**9), (1e308, 1), (1e308, 2000), (60.0, 1)]:
        assert 0.0 < _backoff(base, attempt) <= MAX_RETRY_DELAY_S
    assert _backoff(0.5, 1025) == MAX_RETRY_DELAY_S  # far past the cap, whatever the jitter
    assert _backoff(0.0, 10**9) == 0.0


async def test_the_most_retries_with_no_backoff_fail_quickly_with_every_attempt_stored(
    store: RunStore,
) -> None:
    exp = Experiment(
        id="many",
        pipeline=[StageDef(name="always_fails", retries=MAX_RETRIES, retry_backoff=0)],
    )
    started = time.perf_counter()
    with pytest.raises(StageFailed) as caught:
        await run(exp, registry=REG, store=store, run_id="many-1")
    assert time.perf_counter() - started < 30
    assert caught.value.result == "failure" and isinstance(caught.value.cause, KeyError)
    info = await store.get_run("many-1")
    assert info is not None and info.status == "failed"
    assert (info.failure_stage, info.error_type) == ("always_fails", "KeyError")
    assert [a.attempt for a in info.attempts] == list(range(1, MAX_RETRIES + 2))
    assert {a.result for a in info.attempts} == {"failure"}


async def test_a_huge_backoff_is_capped_so_the_run_deadline_still_decides(
    store: RunStore,
) -> None:
    # The first retry would wait the 60 s cap, past the run's 5 s deadline: the run ends now.
    exp = Experiment(
        id="slow-retry",
        pipeline=[StageDef(name="always_fails", retries=MAX_RETRIES, retry_backoff=1e308)],
    )
    started = time.perf_counter()
    with pytest.raises(StageFailed):
        await run(exp, registry=REG, store=store, run_id="huge-1", timeout=5)
    assert time.perf_counter() - started < 5
    info = await store.get_run("huge-1")
    assert info is not None and info.status == "failed" and len(info.attempts) == 1


async def test_an_error_inside_the_engine_ends_the_run_failed_and_recorded(
    store: RunStore, spans: SpanCapture
) -> None:
    exp = Experiment(
        id="engine-error",
        pipeline=[StageDef(name="fine"), StageDef(name="unprintable", retries=2)],
    )
    with pytest.raises(StageFailed) as caught:
        await run(exp, registry=REG, store=store, run_id="eng-1",
                  tracer_provider=spans.provider)  # fmt: skip
    failed = caught.value
    assert (failed.stage, failed.result) == ("unprintable", "error")
    assert str(failed.cause) == "this error has no message"
    assert failed.context is not None and failed.context.get_metric("x") == 1
    info = await store.get_run("eng-1")
    assert info is not None and info.status == "failed"
    assert (info.failure_stage, info.failure_message, info.error_type) == (
        "unprintable", "this error has no message", "RuntimeError",
    )  # fmt: skip
    assert info.finished_at is not None and info.metrics == {"x": 1}
    run_span = spans.one("RUN engine-error")
    assert run_span.status.status_code is StatusCode.ERROR
    assert run_span.attributes is not None
    assert run_span.attributes["cicd.pipeline.result"] == "error"


async def test_system_exit_from_a_stage_is_recorded_then_propagates(
    store: RunStore, spans: SpanCapture
) -> None:
    exp = Experiment(id="exiting", pipeline=[StageDef(name="exits", retries=3)])
    with pytest.raises(SystemExit) as caught:
        await run(exp, registry=REG, store=store, run_id="exit-1",
                  tracer_provider=spans.provider)  # fmt: skip
    assert caught.value.code == 3
    info = await store.get_run("exit-1")
    assert info is not None and info.status == "failed"
    assert (info.failure_stage, info.error_type) == ("exits", "SystemExit")
    assert [(a.attempt, a.result, a.error_type) for a in info.attempts] == [
        (1, "error", "SystemExit")  # not retried: it was never the stage's own failure
    ]
    assert spans.one("stage exits").status.status_code is StatusCode.ERROR
    assert spans.one("RUN exiting").status.status_code is StatusCode.ERROR
