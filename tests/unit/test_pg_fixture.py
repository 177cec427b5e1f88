"""The PostgreSQL test fixtures skip without PostgreSQL, but fail in CI (tests/pg.py)."""

from __future__ import annotations

import pytest
from pg import _unavailable, with_database


def test_without_postgres_a_developer_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        _unavailable("no server")


def test_without_postgres_ci_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is required in CI: no server"):
        _unavailable("no server")


def test_with_database_keeps_credentials_and_options() -> None:
    url = "postgresql://u:p@db.example:6543/postgres?sslmode=require"
    assert with_database(url, "t_1") == "postgresql://u:p@db.example:6543/t_1?sslmode=require"
