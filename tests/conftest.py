"""Shared fixtures: a fresh span capture and a small registry of test stages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from crucible.testing import SpanCapture, capture_spans


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    with capture_spans() as cap:
        yield cap


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    """Keep structlog's default (print everything) out of test output; restore afterwards."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    yield
    structlog.reset_defaults()
