"""What the CLI prints for an unexpected error: short, and never a database's SQL or values."""

from __future__ import annotations

import pytest
import typer
from sqlalchemy.exc import DBAPIError

from crucible.cli.app import guard


def test_an_unexpected_database_error_shows_neither_sql_nor_bound_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = DBAPIError.instance(
        "INSERT INTO runs (id, metrics) VALUES ($1, $2)", ("r1", '{"token": "v-123"}'),
        ValueError("unsupported Unicode escape sequence"), ValueError,
    )  # fmt: skip
    with pytest.raises(typer.Exit) as caught, guard():
        raise err
    assert caught.value.exit_code == 1
    shown = capsys.readouterr().err
    assert "unexpected ValueError: unsupported Unicode escape sequence" in shown
    assert "INSERT" not in shown and "v-123" not in shown
