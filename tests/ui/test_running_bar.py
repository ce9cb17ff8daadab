"""Which stage a running run is in, as its page's timeline draws it (inferred from its attempts)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from crucible.store import RunInfo
from crucible.store.records import AttemptInfo
from crucible.ui.run_pages import running_bar

START = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
T0 = int(START.timestamp() * 1e9)
CONFIG = {"id": "e", "pipeline": [{"name": "load"}, {"name": "off", "enabled": False},
                                  {"name": "fit"}, {"name": "report"}]}  # fmt: skip


def attempt(index: int, stage: str, result: str, end_s: float, number: int = 1) -> AttemptInfo:
    return AttemptInfo(id=index, run_id="r", stage=stage, name=f"stage {stage}",
                       stage_index=index, attempt=number, result=result, start_ns=T0,
                       end_ns=T0 + int(end_s * 1e9), duration_s=end_s, span_id=None,
                       parent_span_id=None, error_type=None, error_message=None)  # fmt: skip


def run(*attempts: AttemptInfo, status: str = "running", config: Any = CONFIG) -> RunInfo:
    return RunInfo(run_id="r", experiment_id="e", status=status, started_at=START,
                   finished_at=None, trace_id=None, batch_id=None, metrics={}, outputs=[],
                   assigns={}, failure_stage=None, failure_message=None, error_type=None,
                   owner_pid=1, owner_host="h", config=config, attempts=attempts)  # fmt: skip


def test_the_next_enabled_stage_runs_from_when_the_last_one_ended() -> None:
    bar = running_bar(run(attempt(0, "load", "success", 2.0)), T0, T0 + int(5e9))
    assert bar is not None
    assert (bar.lane, bar.result, bar.start_s, bar.end_s) == ("2 · fit", "running", 2.0, 5.0)
    assert "fit: running for 3.0 s" in bar.tooltip


def test_before_any_attempt_the_first_stage_runs_since_the_start() -> None:
    bar = running_bar(run(), T0, T0 + int(1e9))
    assert bar is not None and (bar.lane, bar.start_s, bar.end_s) == ("0 · load", 0.0, 1.0)


def test_a_failed_attempt_is_its_stage_again_while_the_run_goes_on() -> None:
    done = attempt(0, "load", "success", 1.0)
    bar = running_bar(run(done, attempt(2, "fit", "failure", 3.0)), T0, T0 + int(4e9))
    assert bar is not None and bar.lane == "2 · fit" and bar.start_s == 3.0


def test_nothing_is_drawn_for_a_finished_run_or_without_its_configuration() -> None:
    last = attempt(3, "report", "success", 1.0)
    assert running_bar(run(attempt(0, "load", "success", 1.0), status="completed"), T0, T0) is None
    assert running_bar(run(config=None), T0, T0) is None
    assert running_bar(run(last), T0, T0 + 1) is None  # the last stage is done: it is ending
