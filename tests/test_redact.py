"""Secret keys are recognised whatever their case or style; log lines lose their values."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from crucible.logging import configure, redact_secrets
from crucible.redact import REDACTED, is_secret_key

SECRET = [
    "password",
    "Authorization",
    "Password",
    "PASSWORD",
    "API_KEY",
    "ApiKey",
    "apiKey",
    "APIKey",
    "X-Api-Key",
    "api-key",
    "api_key_2",
    "AccessToken",
    "access_token",
    "DB_PASSWORD",
    "GITHUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "aws_secret_access_key",
    "privateKey",
    "Cookie",
    "Set-Cookie",
    "client_secret",
    "bearer",
]
NOT_SECRET = [
    "max_tokens",
    "maxTokens",
    "token_count",
    "num_tokens",
    "tokenizer",
    "sort_key",
    "key",
    "keyboard",
    "monkey",
    "path",
    "",
]


@pytest.mark.parametrize("key", SECRET)
def test_secret_keys_in_any_case_and_style(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", NOT_SECRET)
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)


def test_processor_redacts_top_level_and_nested_values() -> None:
    event = {
        "event": "login",
        "Authorization": "Bearer abc123",
        "user": "ada",
        "headers": {"X-Api-Key": "k-999", "accept": "json", "inner": [{"DB_PASSWORD": "pw1"}]},
    }
    out = redact_secrets(None, "info", event)
    assert out["Authorization"] == REDACTED
    assert out["user"] == "ada"
    assert out["headers"]["X-Api-Key"] == REDACTED
    assert out["headers"]["accept"] == "json"
    assert out["headers"]["inner"][0]["DB_PASSWORD"] == REDACTED


def test_configure_redacts_by_default() -> None:
    stream = io.StringIO()
    configure(json=True, stream=stream)
    try:
        structlog.get_logger().info("connect", ApiKey="sekret-value-1", host="db")
    finally:
        structlog.reset_defaults()
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert "sekret-value-1" not in stream.getvalue()
    assert line["ApiKey"] == REDACTED
    assert line["host"] == "db"
