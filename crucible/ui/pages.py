"""The listing pages: runs (filtered, sorted, paginated), batches, and one batch as a sweep."""

from __future__ import annotations

from typing import Final

from markupsafe import Markup
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from crucible.flatten import is_number
from crucible.ui import params, queries, render
from crucible.ui.sweep import Direction, Sweep, plain, plot, to_csv

__all__ = ["batch_csv", "batch_page", "batches_page", "runs_page"]

MAX_POINT_ROWS: Final = 500


async def runs_page(request: Request) -> Response:
    """Every run, newest first by default, with the chosen metric columns."""
    try:
        query = queries.RunQuery(
            experiment=params.text(request, "experiment"),
            status=params.text(request, "status"),
            batch=params.text(request, "batch"),
            text=params.text(request, "q"),
            sort=params.text(request, "sort") or "started",
            descending=params.text(request, "order") != "asc",
            page=params.number(request, "page", 1),
            per_page=params.number(request, "per", 50),
        )
    except ValueError as err:
        raise HTTPException(400, str(err)) from None
    if query.metric is not None:
        params.check_metric("sort", query.metric)
    columns = params.metric_names(request)
    async with params.store_of(request).reader("ui runs") as conn:
        page = await queries.run_page(conn, query)
        experiments = await queries.experiment_ids(conn)
    seen = {k for row in page.rows for k, v in row.metrics.items() if _scalar(v)}
    context: dict[str, object] = {
        "title": "Runs",
        "page": page,
        "query": query,
        "columns": columns,
        "available": sorted(seen | set(columns)),
        "experiments": experiments,
        "sorts": queries.COLUMN_SORTS,
    }
    return render.page(request, "runs.html", context)


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, str | bool) or is_number(value)


async def batches_page(request: Request) -> Response:
    """The most recent batches with their run counts."""
    async with params.store_of(request).reader("ui batches") as conn:
        batches = await queries.recent_batches(conn)
    return render.page(request, "batches.html", {"title": "Batches", "batches": batches})


async def _sweep(request: Request) -> tuple[str, Sweep]:
    batch_id = params.text(request, "id")
    if batch_id is None:
        raise HTTPException(400, "which batch? pass ?id=<batch id>")
    async with params.store_of(request).reader("ui batch") as conn:
        points = await queries.batch_points(conn, batch_id)
    if not points:
        raise HTTPException(404, f"no runs in batch {batch_id!r}")
    return batch_id, Sweep.of(points)


async def batch_page(request: Request) -> Response:
    """One row per matrix point, the best one marked for the chosen metric, and the plot."""
    batch_id, sweep = await _sweep(request)
    chosen = params.text(request, "by")
    by = params.check_metric("by", chosen) if chosen else sweep.default_metric()
    columns = params.metric_names(request) or ([by] if by else [])
    direction: Direction = "min" if params.text(request, "direction") == "min" else "max"
    sort = params.text(request, "sort") or (f"metric:{by}" if by else "started")
    order = params.text(request, "order") or ("asc" if direction == "min" else "desc")
    descending = order == "desc"
    best = sweep.best(by, direction)
    chart = plot(sweep, by, params.text(request, "x"), best) if by else None
    rows = sweep.sorted(sort, descending)
    statuses: dict[str, int] = {}
    for p in sweep.points:
        statuses[p.status] = statuses.get(p.status, 0) + 1
    context: dict[str, object] = {
        "title": f"Batch {batch_id}",
        "batch_id": batch_id,
        "sweep": sweep,
        "rows": rows[:MAX_POINT_ROWS],
        "shown_all": len(rows) <= MAX_POINT_ROWS,
        "by": by,
        "columns": columns,
        "direction": direction,
        "sort": sort,
        "descending": descending,
        "best": best,
        "chart": Markup(chart) if chart else None,
        "statuses": statuses,
        "experiments": sorted({p.experiment_id for p in sweep.points}),
        "plain": plain,
        "x_param": params.text(request, "x"),
    }
    return render.page(request, "batch.html", context)


async def batch_csv(request: Request) -> Response:
    """The batch as CSV: every point with its parameters and every metric."""
    batch_id, sweep = await _sweep(request)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in batch_id)[:80]
    return Response(
        render.utf8_safe(to_csv(sweep)),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="batch-{safe}.csv"'},
    )
