"""What a test does when a local service it needs is not there."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing_service(message: str) -> NoReturn:
    """Skip on a developer's machine; fail under CI, where .ci/run starts the service."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must provide it: .ci/run starts PostgreSQL)")
    pytest.skip(message)
