"""When the engine itself fails: the StageFailed that still ends the run, failed and recorded.

A bug in the engine's own code (or an error it did not foresee around an attempt) must not leave
a run stored ``running`` with its spans open: the runner turns it into an ordinary failure with
result ``error`` (the engine's failure, not the stage's) and ends the run as usual.
"""

from __future__ import annotations

from crucible.context import Context
from crucible.errors import StageFailed
from crucible.scrub import Scrubber

#: The stage name given when the engine fails before or between stages.
NO_STAGE = "(run)"


class EngineError(RuntimeError):
    """Stands in for an error whose message cannot be read (its ``__str__`` raised)."""


def readable(err: BaseException) -> BaseException:
    """``err``, or an EngineError naming its type when ``str(err)`` itself raises."""
    try:
        str(err)
    except Exception:
        stand_in = EngineError(f"{type(err).__qualname__} (its message could not be read)")
        stand_in.__cause__ = err
        return stand_in
    return err


def engine_failure(
    stage: str, err: BaseException, context: Context | None, scrubber: Scrubber
) -> StageFailed:
    """The failure that ends a run whose engine raised ``err`` while running ``stage``."""
    cause = readable(err)
    failed = StageFailed(stage, cause, context, result="error")
    if scrubber:
        scrubber.exception(cause)
        failed.args = (scrubber.text(str(failed)),)
    return failed
