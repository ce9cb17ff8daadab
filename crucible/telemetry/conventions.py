"""Every span, attribute and metric name Crucible emits, in one place.

Names follow the OpenTelemetry CI/CD semantic conventions (release candidate since semconv
1.43) plus Crucible's own ``crucible.*`` namespace. A rename upstream is one edit here.
"""

from __future__ import annotations

from typing import Final

INSTRUMENTATION_NAME: Final = "crucible"

# --- span names (never carry run ids: those are attributes) -----------------------------------
RUN_SPAN_PREFIX: Final = "RUN"  # "RUN {experiment_id}", kind SERVER
STAGE_SPAN_PREFIX: Final = "stage"  # "stage {name}", kind INTERNAL
BATCH_SPAN_PREFIX: Final = "BATCH"  # "BATCH {name}", kind INTERNAL


def run_span_name(experiment_id: str) -> str:
    return f"{RUN_SPAN_PREFIX} {experiment_id}"


def stage_span_name(stage: str) -> str:
    return f"{STAGE_SPAN_PREFIX} {stage}"


def batch_span_name(name: str) -> str:
    return f"{BATCH_SPAN_PREFIX} {name}"


# --- CI/CD attributes -----------------------------------------------------------------------
PIPELINE_NAME: Final = "cicd.pipeline.name"
PIPELINE_RUN_ID: Final = "cicd.pipeline.run.id"
PIPELINE_RESULT: Final = "cicd.pipeline.result"
PIPELINE_RUN_STATE: Final = "cicd.pipeline.run.state"
TASK_NAME: Final = "cicd.pipeline.task.name"
TASK_RUN_ID: Final = "cicd.pipeline.task.run.id"
TASK_RUN_RESULT: Final = "cicd.pipeline.task.run.result"
TASK_RUN_URL: Final = "cicd.pipeline.task.run.url.full"
WORKER_ID: Final = "cicd.worker.id"
WORKER_NAME: Final = "cicd.worker.name"
ERROR_TYPE: Final = "error.type"

# cicd.pipeline.run.state values
STATE_PENDING: Final = "pending"
STATE_EXECUTING: Final = "executing"
STATE_FINALIZING: Final = "finalizing"

# cicd.pipeline.result / cicd.pipeline.task.run.result values. ``error`` is reserved for
# failures of the engine itself (a stage returning a non-Context); a stage raising is ``failure``.
RESULT_SUCCESS: Final = "success"
RESULT_FAILURE: Final = "failure"
RESULT_ERROR: Final = "error"
RESULT_TIMEOUT: Final = "timeout"
RESULT_CANCELLATION: Final = "cancellation"
RESULT_SKIP: Final = "skip"

# --- crucible.* attributes ------------------------------------------------------------------
STAGE_INDEX: Final = "crucible.stage.index"
STAGE_ATTEMPT: Final = "crucible.stage.attempt"
STAGE_OPTION_KEYS: Final = "crucible.stage.option_keys"
STAGE_OPTIONS: Final = "crucible.stage.options"
STAGE_COUNT: Final = "crucible.stage.count"
STAGE_RESTORED: Final = "crucible.stage.restored"
RUN_RERUN_OF: Final = "crucible.run.rerun_of"  # the run id this run configuration reruns
RUN_RESUMED_FROM: Final = "crucible.run.resumed_from"  # the run id this run continues
BATCH_ID: Final = "crucible.batch.id"
BATCH_SIZE: Final = "crucible.batch.size"
BATCH_MAX_CONCURRENCY: Final = "crucible.batch.max_concurrency"
BATCH_COMPLETED: Final = "crucible.batch.completed"
BATCH_FAILED: Final = "crucible.batch.failed"
BATCH_EXECUTOR: Final = "crucible.batch.executor"  # local, ray
BATCH_LOST: Final = "crucible.batch.lost"  # runs whose worker died (failed, result error)
WORKER_NODE: Final = "crucible.worker.node"  # the Ray node id of a worker's spans
EVENT_RUN_LOST: Final = "crucible.run.lost"  # batch span event: a run's worker died

# --- metrics --------------------------------------------------------------------------------
METRIC_RUN_DURATION: Final = "cicd.pipeline.run.duration"  # histogram, s
METRIC_RUN_ACTIVE: Final = "cicd.pipeline.run.active"  # up-down counter, {run}
METRIC_RUN_ERRORS: Final = "cicd.pipeline.run.errors"  # counter, {error}
METRIC_STAGE_DURATION: Final = "crucible.stage.duration"  # histogram, s
