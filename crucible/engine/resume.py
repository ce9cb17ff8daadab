"""Where a resumed run starts: the stored run it continues, its first stage, its restored state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from crucible.checkpoint import ContextState
from crucible.context import Context
from crucible.experiment import Experiment
from crucible.trace import Trace


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Resume ``run_id`` at pipeline index ``start`` from ``state`` (``crucible.resume`` builds it).

    The stages before ``start`` are not run: the engine records them as restored skips.
    """

    run_id: str
    start: int
    state: ContextState

    def context(
        self, experiment: Experiment, run_id: str, trace: Trace, carrier: Mapping[str, str]
    ) -> Context:
        """The Context the new run starts from: the restored state under the new run's ids."""
        st = self.state
        return Context(
            experiment.id, run_id, experiment, outputs=st.outputs, metrics=st.metrics,
            artifacts=st.artifacts, trace=trace, telemetry_context=carrier, assigns=st.assigns,
        )  # fmt: skip
