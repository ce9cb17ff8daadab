"""A stage that blocks the event loop is named in a warning; well-behaved stages are not."""

from __future__ import annotations

import io
import json
import time

import anyio
import pytest
import structlog

import crucible.logging
from crucible import Context, Experiment, Registry, StageDef, run, stage
from crucible.watchdog import threshold_from_env, watchdog_for_current_loop


@stage("hog", description="Blocks the loop with time.sleep", register=False)
async def hog(ctx: Context) -> Context:
    time.sleep(0.6)  # noqa: ASYNC251 - the bug this detects: blocking inside async code
    return ctx


@stage("polite", description="Awaits", register=False)
async def polite(ctx: Context) -> Context:
    await anyio.sleep(0.3)
    return ctx


async def test_blocking_stage_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRUCIBLE_BLOCK_WARN_S", "0.2")
    buf = io.StringIO()
    crucible.logging.configure(json=True, level="warning", stream=buf)
    try:
        await run(
            Experiment(id="blocky", pipeline=[StageDef(name="polite"), StageDef(name="hog")]),
            registry=Registry([hog, polite]),
            run_id="r-block",
        )
        dog = watchdog_for_current_loop(0.2)
        assert dog is not None
        for _ in range(50):  # the watchdog logs once the loop answers again
            if dog.reports:
                break
            await anyio.sleep(0.02)
    finally:
        structlog.reset_defaults()
    assert [r.stage for r in dog.reports] == ["hog"]
    assert dog.reports[0].run_id == "r-block" and dog.reports[0].seconds >= 0.2
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    warning = next(line for line in lines if line["event"].startswith("event loop blocked"))
    assert warning["stage"] == "hog" and warning["experiment_id"] == "blocky"
    assert warning["level"] == "warning"


def test_threshold_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRUCIBLE_BLOCK_WARN_S", raising=False)
    assert threshold_from_env() == 0.5
    monkeypatch.setenv("CRUCIBLE_BLOCK_WARN_S", "0")
    assert threshold_from_env() is None
    monkeypatch.setenv("CRUCIBLE_BLOCK_WARN_S", "soon")
    with pytest.raises(ValueError, match="CRUCIBLE_BLOCK_WARN_S"):
        threshold_from_env()
