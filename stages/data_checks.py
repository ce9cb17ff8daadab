"""The ``data_checks`` stage: find examples whose required fields are missing or empty.

Reads ``ctx.assigns["examples"]``. Absent or None: the context is returned unchanged. Anything
that is not a list (or other non-string sequence) fails the stage with DataChecksFailed rather
than being skipped silently. The built-in check reports issues in example order and, with
``fail_fast``, really stops at the first one. A custom ``checker(examples, opts)`` replaces it.
"""

from __future__ import annotations

import functools
import inspect
import reprlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, field_validator

from crucible.context import Context
from crucible.errors import CrucibleError
from crucible.registry import load_option_callable
from crucible.stage import stage
from stages.headlines import data_checks_headline

__all__ = [
    "DataChecksFailed",
    "DataChecksOptions",
    "call_maybe_async",
    "callable_name",
    "data_checks",
    "examples_from",
    "find_missing",
    "flagged_rows",
    "short_repr",
]

FLAGGED_LIMIT = 20
"""How many flagged examples ``metrics["data_checks"]["flagged"]`` names (all are in assigns)."""

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80


def short_repr(value: Any) -> str:
    """A bounded repr for error messages (examples can be large)."""
    return _repr.repr(value)


def callable_name(obj: Any) -> str:
    """``module.qualname`` of a function, class or instance, for messages."""
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    module = getattr(target, "__module__", None)
    qual = getattr(target, "__qualname__", repr(target))
    return f"{module}.{qual}" if module else str(qual)


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an instance with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Await an async callable; run a sync one in a worker thread so the loop stays free."""
    if _is_async(fn):
        return await fn(*args)
    out = await anyio.to_thread.run_sync(functools.partial(fn, *args))
    if inspect.isawaitable(out):  # a sync wrapper that hands back a coroutine
        out = await out
    return out


def examples_from(ctx: Context, error: Callable[[str], Exception]) -> Sequence[Any] | None:
    """``assigns["examples"]``: None when absent or None; ``error(msg)`` raised if not a list."""
    value = ctx.assigns.get("examples")
    if value is None:
        return None
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Sequence):
        raise error(
            f"assigns['examples'] must be a list of examples, got {type(value).__name__}: "
            f"{short_repr(value)}"
        )
    return value


def _check_callable_option(value: Any) -> Any:
    if value is None or isinstance(value, str) or callable(value):
        return value
    raise ValueError(f"must be a callable or an import path string, got {type(value).__name__}")


class DataChecksFailed(CrucibleError):
    """Data checks failed; ``issues`` holds the issue(s) that made them fail (may be empty)."""

    def __init__(self, message: str, *, issues: Sequence[Any] = ()) -> None:
        self.issues = list(issues)
        super().__init__(message)


class DataChecksOptions(BaseModel):
    """Options of the ``data_checks`` stage."""

    model_config = ConfigDict(extra="forbid")

    required_fields: list[str] = Field(
        default_factory=lambda: ["input", "output"],
        description="Fields every example must have; None, absent or '' counts as missing.",
    )
    fail_fast: bool = Field(
        default=False,
        description="Stop at the first issue and fail the stage with DataChecksFailed.",
    )
    checker: Any = Field(
        default=None,
        description=(
            "Custom check replacing the built-in one: checker(examples, opts) -> list of issues, "
            "sync or async; a callable, or an import path when the run allows imports."
        ),
    )

    @field_validator("checker")
    @classmethod
    def _callable_or_path(cls, value: Any) -> Any:
        return _check_callable_option(value)


def _missing_fields(example: Mapping[Any, Any], fields: Sequence[str]) -> list[str]:
    missing = []
    for f in fields:
        value = example.get(f)
        if value is None or (isinstance(value, str) and value == ""):
            missing.append(f)
    return missing


def find_missing(
    examples: Sequence[Any], required_fields: Sequence[str], *, fail_fast: bool = False
) -> list[dict[str, Any]]:
    """Issues ``{"index", "example", "missing"}`` in example order; stop at the first if asked.

    An example that is not a mapping is an issue with every required field missing and an
    ``"error"`` saying so.
    """
    issues: list[dict[str, Any]] = []
    for i, ex in enumerate(examples):
        if isinstance(ex, Mapping):
            missing = _missing_fields(ex, required_fields)
            if not missing:
                continue
            issue: dict[str, Any] = {"index": i, "example": ex, "missing": missing}
        else:
            issue = {
                "index": i,
                "example": ex,
                "missing": list(required_fields),
                "error": f"not a mapping (got {type(ex).__name__})",
            }
        issues.append(issue)
        if fail_fast:
            break
    return issues


def _count_missing(issues: Sequence[Any]) -> int:
    total = 0
    for issue in issues:
        missing = issue.get("missing") if isinstance(issue, Mapping) else None
        if isinstance(missing, list | tuple):
            total += len(missing)
    return total


def _example_id(example: Any) -> Any:
    """An example's own ``id`` when it has a short scalar one, else None."""
    if not isinstance(example, Mapping):
        return None
    value = example.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return value if not isinstance(value, str) or len(value) <= 80 else short_repr(value)


def flagged_rows(issues: Sequence[Any], examples: Sequence[Any]) -> list[dict[str, Any]]:
    """The first FLAGGED_LIMIT issues as ``{"index", "id"?, "missing"?, "error"?}`` (no example
    bodies: they can be large, and a report or the store should not copy them)."""
    rows: list[dict[str, Any]] = []
    for issue in issues[:FLAGGED_LIMIT]:
        if not isinstance(issue, Mapping):
            rows.append({"issue": short_repr(issue)})
            continue
        row: dict[str, Any] = {}
        index = issue.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            row["index"] = index
            ident = _example_id(examples[index]) if 0 <= index < len(examples) else None
            if ident is not None:
                row["id"] = ident
        missing = issue.get("missing")
        if isinstance(missing, list | tuple):
            row["missing"] = [str(m) for m in missing]
        why = issue.get("error") or issue.get("reason")
        if why is not None:
            row["error"] = short_repr(why) if not isinstance(why, str) else why[:200]
        rows.append(row)
    return rows


async def _run_checker(checker: Any, examples: Sequence[Any], opts: DataChecksOptions) -> list[Any]:
    name = callable_name(checker)
    try:
        issues = await call_maybe_async(checker, examples, opts)
    except Exception as err:
        raise DataChecksFailed(
            f"data_checks checker {name} raised {type(err).__name__}: {err}"
        ) from err
    if not isinstance(issues, list):
        raise DataChecksFailed(
            f"data_checks checker {name} returned {type(issues).__name__} "
            f"({short_repr(issues)}); expected a list of issues"
        )
    return issues


@stage(
    "data_checks",
    description=(
        "Check that every example in assigns['examples'] has the required fields "
        "(None, absent or empty string counts as missing); record counts and issues"
    ),
    register=False,
)
async def data_checks(ctx: Context, opts: DataChecksOptions) -> Context:
    """Record ``metrics["data_checks"]`` (counts, the first flagged rows, a headline) and
    ``assigns["data_issues"]``; fail fast if asked."""
    examples = examples_from(ctx, DataChecksFailed)
    if examples is None:
        return ctx
    checker = load_option_callable(opts.checker, what="data_checks.checker")
    if checker is not None:
        issues = await _run_checker(checker, examples, opts)
    else:
        fields = list(opts.required_fields)
        issues = await anyio.to_thread.run_sync(
            functools.partial(find_missing, examples, fields, fail_fast=opts.fail_fast)
        )
    if opts.fail_fast and issues:
        first = issues[0]
        if isinstance(first, Mapping):
            where, what = first.get("index", "?"), first.get("error") or first.get("missing")
        else:
            where, what = "?", first
        raise DataChecksFailed(
            f"data checks failed at example {where}: {short_repr(what)}", issues=[first]
        )
    metric = {
        "total": len(examples),
        "missing_required": len(issues),
        "missing_fields": _count_missing(issues),
        "required_fields": list(opts.required_fields),
        "flagged": flagged_rows(issues, examples),
    }
    metric["headline"] = data_checks_headline(metric)
    ctx = ctx.record_event("data_checks.checked", total=len(examples), issues=len(issues))
    return ctx.put_metric("data_checks", metric).assign("data_issues", issues)
