"""The ``guardrails`` stage: scan the examples with a guardrail adapter and record violations.

Reads ``ctx.assigns["examples"]`` with the same gating as ``data_checks`` (absent or None: the
context is returned unchanged and the adapter is not called; not a list: GuardrailsError).
The adapter is anything with ``scan(examples, opts)`` (class or instance) or a plain callable
``(examples, opts)``; sync ones run in a worker thread. It must return a list of mappings.

When ``fail_on_violation`` is set and violations are found, the stage raises GuardrailViolation.
The engine then keeps the stage's input context, so the counts and the violations are carried
on the exception (``violations``, ``total``) rather than in ``metrics``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crucible.context import Context
from crucible.errors import CrucibleError
from crucible.registry import load_option_callable
from crucible.stage import stage
from stages.data_checks import call_maybe_async, callable_name, examples_from, short_repr

__all__ = [
    "GuardrailAdapter",
    "GuardrailAdapterError",
    "GuardrailViolation",
    "GuardrailsError",
    "GuardrailsOptions",
    "NoopAdapter",
    "guardrails",
    "resolve_adapter",
]

Violations = list[Mapping[str, Any]]


@runtime_checkable
class GuardrailAdapter(Protocol):
    """Scans examples and returns one mapping per violation found (sync or async)."""

    def scan(self, examples: Sequence[Any], opts: Any) -> Violations | Awaitable[Violations]: ...


class NoopAdapter:
    """The default adapter: finds no violations."""

    async def scan(self, examples: Sequence[Any], opts: Any) -> Violations:
        """Return no violations (async, so the default costs no worker thread)."""
        return []


class GuardrailsError(CrucibleError):
    """Base class of the ``guardrails`` stage's errors."""


class GuardrailAdapterError(GuardrailsError):
    """The adapter could not be used, raised, or returned something that is not violations."""

    def __init__(self, message: str, *, adapter: str | None = None) -> None:
        self.adapter = adapter
        super().__init__(message)


class GuardrailViolation(GuardrailsError):
    """Violations were found with ``fail_on_violation``; they and the counts are attributes."""

    def __init__(self, violations: Sequence[Mapping[str, Any]], *, total: int) -> None:
        self.violations = list(violations)
        self.total = total
        n = len(self.violations)
        super().__init__(
            f"{n} guardrail violation{'s' if n != 1 else ''} in {total} example"
            f"{'s' if total != 1 else ''}; first: {short_repr(self.violations[0]) if n else '-'}"
        )


class GuardrailsOptions(BaseModel):
    """Options of the ``guardrails`` stage."""

    model_config = ConfigDict(extra="forbid")

    adapter: Any = Field(
        default=None,
        description=(
            "Guardrail adapter: a class or instance with scan(examples, opts), or a callable "
            "(examples, opts), sync or async; an import path when the run allows imports. "
            "Default: NoopAdapter."
        ),
    )
    fail_on_violation: bool = Field(
        default=False,
        description="Fail the stage (GuardrailViolation) when any violation is found.",
    )

    @field_validator("adapter")
    @classmethod
    def _adapter_shape(cls, value: Any) -> Any:
        if value is None or isinstance(value, str) or callable(value):
            return value
        if callable(getattr(value, "scan", None)):
            return value
        raise ValueError(
            "must be an adapter (with scan(examples, opts)), a callable or an import path string, "
            f"got {type(value).__name__}"
        )


def resolve_adapter(value: Any) -> tuple[Callable[..., Any], str]:
    """The scan callable and the adapter's name, from an option value (None: NoopAdapter)."""
    obj = NoopAdapter() if value is None else value
    if isinstance(obj, str):
        obj = load_option_callable(obj, what="guardrails.adapter")
    name = callable_name(obj)
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as err:
            raise GuardrailAdapterError(
                f"guardrail adapter {name} could not be constructed with no arguments: {err}",
                adapter=name,
            ) from err
    scan = getattr(obj, "scan", None)
    if callable(scan):
        return scan, name
    if callable(obj):
        return obj, name
    raise GuardrailAdapterError(
        f"guardrail adapter {name} has no scan(examples, opts) method and is not callable",
        adapter=name,
    )


def _check_violations(result: Any, name: str) -> Violations:
    if not isinstance(result, list):
        raise GuardrailAdapterError(
            f"guardrail adapter {name} returned {type(result).__name__} ({short_repr(result)}); "
            "expected a list of violation mappings",
            adapter=name,
        )
    for i, v in enumerate(result):
        if not isinstance(v, Mapping):
            raise GuardrailAdapterError(
                f"guardrail adapter {name} returned a list whose item {i} is "
                f"{type(v).__name__} ({short_repr(v)}); expected a mapping per violation",
                adapter=name,
            )
    return result


@stage(
    "guardrails",
    description=(
        "Scan assigns['examples'] with a guardrail adapter; record violations, or fail on them "
        "when fail_on_violation is set"
    ),
    register=False,
)
async def guardrails(ctx: Context, opts: GuardrailsOptions) -> Context:
    """Record ``metrics["guardrails"]`` and ``assigns["guardrail_violations"]``."""
    examples = examples_from(ctx, GuardrailsError)
    if examples is None:
        return ctx
    scan, name = resolve_adapter(opts.adapter)
    try:
        result = await call_maybe_async(scan, examples, opts)
    except Exception as err:
        raise GuardrailAdapterError(
            f"guardrail adapter {name} raised {type(err).__name__}: {err}", adapter=name
        ) from err
    violations = _check_violations(result, name)
    total = len(examples)
    if violations and opts.fail_on_violation:
        raise GuardrailViolation(violations, total=total)
    ctx = ctx.record_event(
        "guardrails.scanned", total=total, violations=len(violations), adapter=name
    )
    metric = {"total": total, "violations": len(violations)}
    return ctx.put_metric("guardrails", metric).assign("guardrail_violations", list(violations))
