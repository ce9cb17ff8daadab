"""Experiments: the models, loading them from files, and expanding sweeps.

The models load at once; loading files (PyYAML, tomllib) and overrides load on first use
(PEP 562), so code that only names ``Experiment`` or ``StageDef`` (``crucible stages``, the
stage modules) does not pay for the file parsers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crucible.experiment.models import (
    BackendRef,
    DatasetRef,
    Ensemble,
    Experiment,
    Fairness,
    Guardrail,
    Hedging,
    OutputSpec,
    Reliability,
    StageDef,
    Stats,
)
from crucible.lazy import lazy_getattr

if TYPE_CHECKING:
    from crucible.experiment.limits import DocumentLimits
    from crucible.experiment.loading import (
        experiment_from_mapping,
        load_experiment,
        validation_messages,
    )
    from crucible.experiment.matrix import matrix_points
    from crucible.experiment.overrides import (
        Override,
        apply_overrides,
        load_with_overrides,
        parse_override,
    )

_WHERE: dict[str, str] = {
    "DocumentLimits": "crucible.experiment.limits",
    "experiment_from_mapping": "crucible.experiment.loading",
    "load_experiment": "crucible.experiment.loading",
    "validation_messages": "crucible.experiment.loading",
    "matrix_points": "crucible.experiment.matrix",
    "Override": "crucible.experiment.overrides",
    "apply_overrides": "crucible.experiment.overrides",
    "load_with_overrides": "crucible.experiment.overrides",
    "parse_override": "crucible.experiment.overrides",
}

__all__ = [
    "BackendRef",
    "DatasetRef",
    "DocumentLimits",
    "Ensemble",
    "Experiment",
    "Fairness",
    "Guardrail",
    "Hedging",
    "OutputSpec",
    "Override",
    "Reliability",
    "StageDef",
    "Stats",
    "apply_overrides",
    "experiment_from_mapping",
    "load_experiment",
    "load_with_overrides",
    "matrix_points",
    "parse_override",
    "validation_messages",
]


__getattr__ = lazy_getattr(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted(__all__)
