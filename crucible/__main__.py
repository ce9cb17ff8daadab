"""``python -m crucible``: a tiny demo that builds a Context with the pure helpers and prints it."""

from __future__ import annotations

import json

from crucible.context import Context
from crucible.experiment import Experiment, StageDef


def demo() -> Context:
    exp = Experiment(id="demo", pipeline=[StageDef(name="validate")])
    ctx = Context(experiment_id=exp.id, run_id="run-1", experiment=exp)
    ctx = ctx.put_metric("accuracy", 0.95).assign(user="alice", priority="high")
    ctx = ctx.add_output({"prompt": "2+2", "answer": 4}).mark_stage_complete("data_load")
    return ctx


if __name__ == "__main__":
    print(json.dumps(demo().to_dict(), indent=2))
