"""The pages about single runs: a run (with its live JSON), its artifacts, and compare."""

from __future__ import annotations

import time
from typing import Any

from markupsafe import Markup
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from crucible.compare import diff_runs, run_configuration
from crucible.flatten import flatten, flatten_configuration
from crucible.headline import headlines
from crucible.status import RunStatus
from crucible.store import RunInfo, RunStore
from crucible.store.records import ExperimentInfo
from crucible.ui import params, render
from crucible.ui.artifacts import ARTIFACT_CSP, media_type, servable
from crucible.ui.charts import TimelineBar, timeline
from crucible.ui.config import UiSettings

__all__ = ["artifact", "compare_page", "run_live", "run_page"]


def _settings(request: Request) -> UiSettings:
    settings: UiSettings = request.app.state.settings
    return settings


async def _run(store: RunStore, run_id: str | None) -> RunInfo:
    if run_id is None:
        raise HTTPException(400, "which run? pass ?id=<run id>")
    info = await store.get_run(run_id)
    if info is None:
        raise HTTPException(404, f"no run with id {run_id!r}")
    return info


def _origin_ns(info: RunInfo) -> float:
    """Where a run's time axis starts: its start, or its first attempt if that was earlier."""
    return min([info.started_at.timestamp() * 1e9, *(a.start_ns for a in info.attempts)])


def running_bar(info: RunInfo, origin: float, now_ns: int) -> TimelineBar | None:
    """The stage a running run is in, drawn from when its previous attempt ended until now.

    Attempts are stored as they end, so this is inferred: the enabled stage after the last one
    that succeeded (or was skipped), or the failed stage again while it may be retried.
    """
    if info.status != RunStatus.RUNNING or not info.config:
        return None
    stages = [(i, s) for i, s in enumerate(info.config.get("pipeline") or [])
              if isinstance(s, dict) and s.get("enabled", True) is not False]  # fmt: skip
    last = max(info.attempts, key=lambda a: a.end_ns, default=None)
    if last is None:
        after = -1
    elif last.stage_index is None:
        return None  # attempts of an older store: no index to go on
    elif last.result in ("success", "skip"):
        after = last.stage_index
    else:
        after = last.stage_index - 1  # retried, or about to end: the same stage
    nxt = next(((i, s) for i, s in stages if i > after), None)
    if nxt is None:
        return None
    index, stage_def = nxt
    name = str(stage_def.get("name", "?"))
    since = (last.end_ns if last is not None else info.started_at.timestamp() * 1e9) - origin
    start, end = since / 1e9, max(since, now_ns - origin) / 1e9
    tip = f"{name}: running for {end - start:.1f} s (since the previous attempt ended)"
    return TimelineBar(f"{index} · {name}", start, end, "running", 1, tip)


def _timeline(info: RunInfo, origin: float) -> str | None:
    live = running_bar(info, origin, time.time_ns())
    if not info.attempts and live is None:
        return None
    bars = []
    for a in info.attempts:
        lane = a.stage if a.stage_index is None else f"{a.stage_index} · {a.stage}"
        tip = f"{a.stage}, attempt {a.attempt}: {a.result}, {a.duration_s:.3f} s"
        if a.error_type:
            tip += f" ({a.error_type}: {a.error_message or ''})"
        start, end = (a.start_ns - origin) / 1e9, (a.end_ns - origin) / 1e9
        bars.append(TimelineBar(lane, start, end, a.result, a.attempt, tip))
    if live is not None:
        bars.append(live)
    return timeline(bars)


async def _run_context(request: Request) -> dict[str, Any]:
    store = params.store_of(request)
    info = await _run(store, params.text(request, "id"))
    experiment = await store.get_experiment(info.experiment_id)
    settings = _settings(request)
    jaeger = None
    if settings.jaeger_url and info.trace_id and info.trace_exported is not False:
        jaeger = f"{settings.jaeger_url.rstrip('/')}/trace/{info.trace_id}"
    origin = _origin_ns(info)
    chart = _timeline(info, origin)
    return {
        "title": f"Run {info.run_id}",
        "info": info,
        "running": info.status == RunStatus.RUNNING,
        "timeline": Markup(chart) if chart else None,
        "origin_ns": origin,
        "headlines": headlines(info.metrics),
        "metrics": sorted(flatten(info.metrics).items()),
        "matrix": info.assigns.get("matrix") or {},
        "configuration": sorted(flatten_configuration(run_configuration(info, experiment)).items()),
        "artifacts": [
            (art, servable(art.location, settings.artifact_roots) is not None)
            for art in info.artifacts
        ],
        "jaeger": jaeger,
    }


async def run_page(request: Request) -> Response:
    """One run: ids, status, failure, timeline, attempts, metrics, configuration, artifacts."""
    return render.page(request, "run.html", await _run_context(request))


async def run_live(request: Request) -> Response:
    """The run page's changing part as JSON: the page polls it while the run is running."""
    context = await _run_context(request)
    info: RunInfo = context["info"]
    return JSONResponse(
        {
            "status": info.status,
            "running": context["running"],
            "html": render.fragment(request, "_run_live.html", context),
        }
    )


async def artifact(request: Request) -> Response:
    """An artifact's file, when it lies inside an allowed root (see ``crucible.ui.artifacts``)."""
    info = await _run(params.store_of(request), params.text(request, "run"))
    wanted = params.number(request, "id", -1)
    art = next((a for a in info.artifacts if a.id == wanted), None)
    if art is None:
        raise HTTPException(404, f"run {info.run_id!r} has no artifact {wanted}")
    path = servable(art.location, _settings(request).artifact_roots)
    if path is None:
        raise HTTPException(404, f"artifact {art.name!r} is not a file inside an allowed root")
    kind, inline = media_type(path)
    return FileResponse(
        path,
        media_type=kind,
        filename=path.name,
        content_disposition_type="inline" if inline else "attachment",
        headers={"content-security-policy": ARTIFACT_CSP},
    )


async def compare_page(request: Request) -> Response:
    """Two or more runs: configuration differences and metrics side by side."""
    ids = params.texts(request, "run")
    if len(ids) < 2:
        raise HTTPException(400, "pick two or more runs to compare (?run=<id>&run=<id>)")
    store = params.store_of(request)
    infos = [await _run(store, rid) for rid in ids]
    experiments: dict[str, ExperimentInfo | None] = {}
    for info in infos:
        if info.experiment_id not in experiments:
            experiments[info.experiment_id] = await store.get_experiment(info.experiment_id)
    configs = [run_configuration(i, experiments[i.experiment_id]) for i in infos]
    diff = diff_runs(infos, configs)
    context = {"title": "Compare runs", "diff": diff, "ids": ids}
    return render.page(request, "compare.html", context)
