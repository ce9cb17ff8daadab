"""bench's scipy loads in bench's own worker thread, never in pre-flight or another stage."""

from __future__ import annotations

import json
import subprocess
import sys

# A fresh interpreter: the test process may already have scipy loaded.
CODE = """
import json, sys, threading
import anyio, crucible

first_import = []


def hook(event, args):
    if event == "import" and args[0].split(".")[0] == "scipy" and not first_import:
        first_import.append(threading.current_thread() is threading.main_thread())


sys.addaudithook(hook)
seen = {}


@crucible.stage("probe", description="Note whether scipy is loaded; add scores")
async def probe(ctx):
    seen[ctx.assigns.get("probes", 0)] = "scipy" in sys.modules
    scores = [{"prompt": p, "score": s} for p in ("a", "b") for s in (0.1, 0.2, 0.4, 0.3)]
    return ctx.assign(probes=ctx.assigns.get("probes", 0) + 1).add_outputs(scores)


exp = crucible.Experiment(id="x", pipeline=[crucible.StageDef(name="probe"),
                                           crucible.StageDef(name="bench"),
                                           crucible.StageDef(name="probe")])
ctx = anyio.run(crucible.run, exp)
print(json.dumps([seen, first_import, "bench" in ctx.metrics]))
"""


def test_scipy_loads_in_benchs_worker_thread_not_before() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    seen, first_import, benched = json.loads(done.stdout.splitlines()[-1])
    assert benched
    assert seen == {"0": False, "1": True}  # not loaded by pre-flight or the first stage
    assert first_import == [False]  # first imported off the main thread: bench's worker
