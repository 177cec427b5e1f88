"""Which lost connections end a PostgreSQL call's retries (``postgres._lost_again``)."""

from __future__ import annotations

import pytest

pytest.importorskip("psycopg")

from jobq.backends.postgres import (
    LOST_CONNECTIONS_MAX,
    AloneStatements,
    _Lost,
    _lost_again,
    _one_more_loss,
)  # after the skip: needs psycopg


def _begun(at: float) -> AloneStatements:
    conn = AloneStatements()
    conn.connecting_since = at
    return conn


def test_the_first_loss_is_retried() -> None:
    assert _lost_again(None, _begun(5.0)) is False


def test_a_connection_begun_after_the_first_loss_ends_the_call() -> None:
    assert _lost_again(_Lost(10.0, 1), _begun(10.5)) is True
    assert _lost_again(_Lost(10.0, 1), _begun(10.0)) is True  # as late as the loss: not known older


def test_a_connection_begun_before_the_first_loss_does_not_spend_the_retry() -> None:
    assert _lost_again(_Lost(10.0, 1), _begun(9.0)) is False
    assert _lost_again(_Lost(10.0, LOST_CONNECTIONS_MAX - 1), _begun(9.0)) is False


def test_stale_connections_past_the_most_end_the_call() -> None:
    assert _lost_again(_Lost(10.0, LOST_CONNECTIONS_MAX), _begun(9.0)) is True


def test_a_loss_without_a_connection_ends_it() -> None:
    assert _lost_again(_Lost(10.0, 1), None) is True


def test_each_loss_is_counted_from_the_first() -> None:
    first = _one_more_loss(None)
    assert first.losses == 1 and _one_more_loss(first) == _Lost(first.first_at, 2)
