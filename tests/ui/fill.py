"""Fill a store the way users do: real runs and batches of the test stages, incl. a sweep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import crucible
from crucible import Experiment, StageDef
from crucible.store import RunStore
from tests.ui.stages import REGISTRY, sweep_experiment

HOSTILE = "<script>alert('x')</script>"


@dataclass(frozen=True)
class Filled:
    """The ids a test looks for."""

    sweep_batch: str
    sweep3_batch: str
    sweep_runs: tuple[str, ...]
    retried: str
    failed: str
    reported: str
    hostile: str


async def fill(store: RunStore, workdir: Path) -> Filled:
    """A 2-parameter sweep (6 points), a 3-parameter one, a retried, a failed, a reporting run
    and one whose id and metric name are HTML."""
    sweep = sweep_experiment().model_copy(
        update={"matrix": {"ui_score.alpha": [0.1, 0.2, 0.3], "ui_score.depth": [1, 2]}}
    )
    outcomes = await crucible.run_batch(
        crucible.expand_matrix(sweep), batch_id="sweep-1", store=store, registry=REGISTRY
    )
    sweep3 = sweep_experiment("sweep3").model_copy(
        update={
            "matrix": {
                "ui_score.alpha": [0.1, 0.3],
                "ui_score.depth": [1, 3],
                "ui_score.kind": ["plain", "fancy"],
            }
        }
    )
    await crucible.run_batch(
        crucible.expand_matrix(sweep3), batch_id="sweep-3", store=store, registry=REGISTRY
    )
    retry = Experiment(
        id="retry",
        pipeline=[
            StageDef(name="ui_flaky", options={"fail_times": 1}, retries=2, retry_backoff=0.01),
            StageDef(name="ui_score", options={"alpha": 0.4}),
        ],
    )
    # Traced to an SDK provider (its spans "exported"); every other run here is untraced.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    await crucible.run(retry, run_id="retried-run", store=store, registry=REGISTRY,
                       tracer_provider=provider)  # fmt: skip
    failing = Experiment(
        id="failing",
        pipeline=[
            StageDef(name="ui_score"),
            StageDef(name="ui_boom", options={"message": f"went wrong {HOSTILE}"}),
        ],
    )
    with pytest.raises(crucible.StageFailed):
        await crucible.run(failing, run_id="failed-run", store=store, registry=REGISTRY)
    report_path = workdir / "reports" / "reported-run.html"
    reporting = Experiment(
        id="reporting",
        pipeline=[StageDef(name="ui_report", options={"path": str(report_path)})],
    )
    await crucible.run(reporting, run_id="reported-run", store=store, registry=REGISTRY)
    hostile = Experiment(
        id="hostile",
        pipeline=[StageDef(name="ui_named", options={"name": HOSTILE, "value": 2.5})],
    )
    await crucible.run(hostile, run_id=HOSTILE, store=store, registry=REGISTRY)
    return Filled(
        sweep_batch="sweep-1",
        sweep3_batch="sweep-3",
        sweep_runs=tuple(o.run_id for o in outcomes),
        retried="retried-run",
        failed="failed-run",
        reported="reported-run",
        hostile=HOSTILE,
    )
