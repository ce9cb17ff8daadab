"""What a stored run says went wrong names the user's error, never an engine-private class or
the cancel scope and task of the library underneath."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from crucible import Context, Experiment, Registry, StageDef, StageFailed, run, stage
from crucible.store import RunStore


@stage("returns_int", description="Returns a number instead of a Context", register=False)
async def returns_int(ctx: Context) -> Any:
    return 42


@stage("waits", description="Sleeps until cancelled", register=False)
async def waits(ctx: Context) -> Context:
    await anyio.sleep(60)
    return ctx


REG = Registry([returns_int, waits])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RunStore]:
    async with RunStore(tmp_path / "runs.db") as s:
        yield s


async def test_a_stage_returning_no_context_is_stored_as_a_type_error(store: RunStore) -> None:
    exp = Experiment(id="bad-return", pipeline=[StageDef(name="returns_int")])
    with pytest.raises(StageFailed) as caught:
        await run(exp, registry=REG, store=store, run_id="bad-return-1")
    assert isinstance(caught.value.cause, TypeError)
    assert str(caught.value) == (
        "stage 'returns_int' failed (error): "
        "TypeError: stage 'returns_int' returned int, expected a Context"
    )
    info = await store.get_run("bad-return-1")
    assert info is not None and info.error_type == "TypeError"
    assert [(a.result, a.error_type) for a in info.attempts] == [("error", "TypeError")]


async def test_a_cancelled_attempt_is_stored_with_a_plain_message(store: RunStore) -> None:
    exp = Experiment(id="cancelled", pipeline=[StageDef(name="waits")])
    with anyio.move_on_after(0.5):
        await run(exp, registry=REG, store=store, run_id="cancelled-1")
    info = await store.get_run("cancelled-1")
    assert info is not None and info.status == "cancelled"
    (attempt,) = info.attempts
    assert attempt.result == "cancellation"
    assert attempt.error_message == "cancelled while the stage ran"
    stored = f"{info.failure_message} {attempt.error_message}"
    assert "scope" not in stored and "Task" not in stored
