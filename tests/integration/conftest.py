"""Integration fixtures shared with the store tests (the session's PostgreSQL database)."""

from tests.store.conftest import pg_database

__all__ = ["pg_database"]
