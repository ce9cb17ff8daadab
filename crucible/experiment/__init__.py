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
    "Reliability",
    "StageDef",
    "Stats",
    "experiment_from_mapping",
    "load_experiment",
    "matrix_points",
    "validation_messages",
]
