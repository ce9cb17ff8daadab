"""Experiments: the models, loading them from files, and expanding sweeps."""

from crucible.experiment.limits import DocumentLimits
from crucible.experiment.loading import (
    experiment_from_mapping,
    load_experiment,
    validation_messages,
)
from crucible.experiment.matrix import matrix_points
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
from crucible.experiment.overrides import (
    Override,
    apply_overrides,
    load_with_overrides,
    parse_override,
)

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
