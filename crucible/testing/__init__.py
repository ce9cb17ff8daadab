"""Helpers for users' tests: capture the spans of a run, run one stage through the real engine.

Real OTLP receivers live in ``crucible.testing.otlp`` (the ``testing`` extra); importing this
package does not load them, so it needs nothing beyond crucible itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crucible.context import Context
from crucible.engine import run
from crucible.experiment import Experiment, StageDef
from crucible.registry import Registry
from crucible.stage import as_stage_spec


@dataclass
class SpanCapture:
    """Finished spans of the runs given ``tracer_provider=capture.provider``."""

    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        if len(found) != 1:
            names = [s.name for s in self.spans()]
            raise AssertionError(f"expected one span {name!r}, found {len(found)} in {names}")
        return found[0]

    def clear(self) -> None:
        self.exporter.clear()


@contextmanager
def capture_spans() -> Iterator[SpanCapture]:
    """An SDK provider exporting synchronously to memory; pass ``capture.provider`` to run()."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield SpanCapture(provider, exporter)
    finally:
        provider.shutdown()


def make_context(experiment_id: str = "test", run_id: str = "test-run", **fields: Any) -> Context:
    """A Context for unit tests of stage code."""
    return Context(
        experiment_id=experiment_id,
        run_id=run_id,
        experiment=fields.pop("experiment", Experiment(id=experiment_id)),
        **fields,
    )


async def run_stage(
    stage: Any,
    ctx: Context | None = None,
    options: Mapping[str, Any] | None = None,
    **run_kwargs: Any,
) -> Context:
    """Run one stage (decorated function, Stage class or instance) through the real engine.

    The stage sees ``ctx``'s assigns; the returned Context is the engine's final one (with
    ``trace``, completion and metrics). Options are validated exactly as in a pipeline.
    """
    spec = as_stage_spec(stage)
    base = ctx if ctx is not None else make_context()
    exp = base.experiment.model_copy(
        update={"pipeline": [StageDef(name=spec.name, options=dict(options or {}))]}
    )
    return await run(
        exp,
        run_id=base.run_id,
        assigns=base.assigns,
        registry=Registry([spec]),
        **run_kwargs,
    )
